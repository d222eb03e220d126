//! The dead-man switch: it stops PostgreSQL at once when the leader lease is about to run
//! out unrenewed, independently of the HA loop.
//!
//! The loop arms it with a deadline slightly before each renewed lease's `valid_until`
//! and disarms it once PostgreSQL no longer runs as a primary without a lease. If the
//! deadline passes while armed — the loop is stuck in a slow call, the runtime is
//! starved, renewals keep failing, the agent process is frozen (`SIGSTOP`) or killed —
//! the switch sends `SIGQUIT` to the postmaster (PostgreSQL's immediate shutdown, what
//! `pg_ctl stop -m immediate` sends): the server stops accepting commits before another
//! member can hold the lock.
//!
//! Two watchers hold the same deadline:
//! - a plain OS thread in the agent, so that neither a blocked runtime nor a process table
//!   or disk too busy to start a program can delay it;
//! - a *guardian* process (`ha-agent --dead-man <data_dir>`, in its own process group),
//!   fed every change over a pipe, so that a frozen or killed agent — whose thread freezes
//!   or dies with it while the postmaster, in its own session, keeps serving — still has
//!   its primary stopped at the deadline. When the pipe closes it keeps the last deadline:
//!   it exits at once if disarmed, else after firing. This is the part of a watchdog that
//!   user space can do; a frozen machine still needs a hardware watchdog.
//!
//! Deadlines cross the pipe as `CLOCK_MONOTONIC` nanoseconds, the clock `Instant` reads
//! on Linux, so a wall-clock jump changes nothing.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The handle the loop keeps; dropping it ends the thread without firing.
pub struct DeadMan {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// A guardian process is being fed.
    guarded: std::sync::atomic::AtomicBool,
}

struct State {
    deadline: Option<Instant>,
    fired: u64,
    stop: bool,
    /// Bumped on every arm and disarm, so the guardian feeder sends each change.
    changes: u64,
    /// The last change the guardian was sent.
    delivered: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock cannot leave the state inconsistent
        // (every write is one assignment), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadMan {
    /// Starts the thread for the PostgreSQL whose data directory is `data_dir`.
    ///
    /// # Errors
    /// The thread could not be created.
    pub fn start(data_dir: PathBuf) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                deadline: None,
                fired: 0,
                stop: false,
                changes: 0,
                delivered: 0,
            }),
            wake: Condvar::new(),
            guarded: std::sync::atomic::AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("dead-man".into())
            .spawn(move || watch(&thread_shared, &data_dir))?;
        Ok(Self { shared })
    }

    /// Arms (or moves) the deadline: at `deadline`, PostgreSQL is stopped unless the
    /// switch was re-armed later or disarmed before.
    pub fn arm(&self, deadline: Instant) {
        self.set(Some(deadline));
    }

    /// Disarms: PostgreSQL runs without a lease only as a replica now, or is stopped.
    pub fn disarm(&self) {
        self.set(None);
    }

    fn set(&self, deadline: Option<Instant>) {
        let mut state = self.shared.lock();
        state.deadline = deadline;
        state.changes += 1;
        drop(state);
        self.shared.wake.notify_all();
    }

    /// Waits up to `timeout` until the guardian (if there is one) was sent the latest
    /// change: before the agent exits, so a disarm is not lost with it.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while self.guarded() && state.delivered != state.changes {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = self
                .shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn guarded(&self) -> bool {
        self.shared
            .guarded
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a deadline is armed (and has not fired).
    #[must_use]
    pub fn is_armed(&self) -> bool {
        self.shared.lock().deadline.is_some()
    }

    /// Starts the guardian process `program --dead-man <data_dir>` and a thread that
    /// sends it every arm and disarm. When it cannot be started the thread alone
    /// watches, and a warning says so.
    #[must_use]
    pub fn with_guardian(self, program: &Path, data_dir: &Path) -> Self {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(program)
            .arg("--dead-man")
            .arg(data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its log lines go where the agent's go.
            .stderr(Stdio::inherit())
            // Its own process group: a signal to the agent's group (a terminal's Ctrl-C, a
            // supervisor stopping the group) must not take the guardian with it.
            .process_group(0)
            .spawn();
        let stdin = match child {
            Ok(mut child) => child.stdin.take(),
            Err(error) => {
                tracing::warn!(
                    "cannot start the dead-man guardian process ({error}): a frozen or killed \
                     agent will not have its primary stopped"
                );
                None
            }
        };
        if let Some(stdin) = stdin {
            self.shared
                .guarded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("dead-man-feed".into())
                .spawn(move || feed(&shared, stdin));
            if let Err(error) = spawned {
                tracing::warn!("cannot start the dead-man guardian feeder: {error}");
            }
        }
        self
    }

    /// How many times the switch fired since the start.
    #[must_use]
    pub fn fired(&self) -> u64 {
        self.shared.lock().fired
    }
}

impl Drop for DeadMan {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

/// Sends the guardian each new state; on stop it sends the last one and closes the pipe.
fn feed(shared: &Shared, mut pipe: std::process::ChildStdin) {
    let mut sent = 0;
    loop {
        let mut state = shared.lock();
        while state.changes == sent && !state.stop {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let (deadline, stop) = (state.deadline, state.stop);
        sent = state.changes;
        drop(state);
        let line = match deadline {
            Some(deadline) => format!("arm {}\n", to_monotonic(deadline).as_nanos()),
            None => "disarm\n".to_owned(),
        };
        if let Err(error) = pipe.write_all(line.as_bytes()).and_then(|()| pipe.flush()) {
            tracing::warn!("the dead-man guardian is gone ({error}); the in-process switch stays");
            shared
                .guarded
                .store(false, std::sync::atomic::Ordering::Relaxed);
            shared.wake.notify_all();
            return;
        }
        shared.lock().delivered = sent;
        shared.wake.notify_all();
        if stop {
            // Dropping the pipe tells the guardian the agent is done.
            return;
        }
    }
}

/// `ha-agent --dead-man <data_dir>`: the guardian process. Holds the deadline the agent
/// sends on standard input; when that closes, exits at once if disarmed, else after the
/// deadline fired.
#[must_use]
pub fn run_guardian(data_dir: PathBuf) -> ExitCode {
    let deadman = match DeadMan::start(data_dir) {
        Ok(deadman) => deadman,
        Err(error) => {
            tracing::error!("dead-man guardian: cannot start its thread: {error}");
            return ExitCode::FAILURE;
        }
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match parse_command(&line) {
            Some(GuardianCommand::Arm(at)) => deadman.arm(from_monotonic(at)),
            Some(GuardianCommand::Disarm) => deadman.disarm(),
            None => tracing::warn!("dead-man guardian: ignoring {line:?}"),
        }
    }
    while deadman.is_armed() {
        std::thread::sleep(Duration::from_millis(20));
    }
    ExitCode::SUCCESS
}

/// One line from the agent to its guardian.
#[derive(Debug, PartialEq, Eq)]
enum GuardianCommand {
    /// `arm <CLOCK_MONOTONIC nanoseconds>`.
    Arm(Duration),
    /// `disarm`.
    Disarm,
}

fn parse_command(line: &str) -> Option<GuardianCommand> {
    match line.trim().split_once(' ') {
        Some(("arm", nanos)) => {
            let nanos: u128 = nanos.trim().parse().ok()?;
            let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
            let subsec = u32::try_from(nanos % 1_000_000_000).ok()?;
            Some(GuardianCommand::Arm(Duration::new(secs, subsec)))
        }
        None if line.trim() == "disarm" => Some(GuardianCommand::Disarm),
        _ => None,
    }
}

/// `CLOCK_MONOTONIC` now, as a duration since its (boot-time) origin.
fn monotonic_now() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(Duration::ZERO, Duration::from)
}

/// An `Instant` as `CLOCK_MONOTONIC` time (the clock `Instant` reads on Linux).
fn to_monotonic(at: Instant) -> Duration {
    let (now, monotonic) = (Instant::now(), monotonic_now());
    match at.checked_duration_since(now) {
        Some(ahead) => monotonic + ahead,
        None => monotonic.saturating_sub(now - at),
    }
}

/// A `CLOCK_MONOTONIC` time as an `Instant`.
fn from_monotonic(at: Duration) -> Instant {
    let (now, monotonic) = (Instant::now(), monotonic_now());
    match at.checked_sub(monotonic) {
        Some(ahead) => now + ahead,
        None => now.checked_sub(monotonic.saturating_sub(at)).unwrap_or(now),
    }
}

fn watch(shared: &Shared, data_dir: &std::path::Path) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        state = match state.deadline {
            None => shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    state.deadline = None;
                    state.fired += 1;
                    drop(state);
                    fire(data_dir);
                    shared.lock()
                } else {
                    shared
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            }
        };
    }
}

/// Immediate shutdown of the postmaster named in `postmaster.pid`, if it runs.
fn fire(data_dir: &std::path::Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
    let Some(pid) = pid else {
        tracing::warn!(
            "dead-man switch: the leader lease was not renewed in time; PostgreSQL is not running"
        );
        return;
    };
    match kill(Pid::from_raw(pid), Signal::SIGQUIT) {
        Ok(()) => tracing::error!(
            "dead-man switch: the leader lease was not renewed in time; \
             stopped PostgreSQL (pid {pid}) with an immediate shutdown"
        ),
        Err(error) => tracing::error!(
            "dead-man switch: the leader lease was not renewed in time; \
             could not signal the postmaster (pid {pid}): {error}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn wait_for(deadman: &DeadMan, fired: u64) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if deadman.fired() == fired {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn fires_once_at_an_armed_deadline_and_never_when_disarmed_or_moved() {
        let dir = tempfile::tempdir().unwrap();
        let deadman = DeadMan::start(dir.path().to_owned()).unwrap();

        deadman.arm(Instant::now() + Duration::from_millis(50));
        deadman.disarm();
        deadman.arm(Instant::now() + Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(deadman.fired(), 0, "a disarmed or moved deadline fired");

        deadman.arm(Instant::now() + Duration::from_millis(20));
        assert!(wait_for(&deadman, 1), "an armed deadline did not fire");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(deadman.fired(), 1, "fired more than once for one deadline");
    }

    #[test]
    fn guardian_commands_and_clock_conversion_round_trip() {
        assert_eq!(parse_command("disarm"), Some(GuardianCommand::Disarm));
        assert_eq!(
            parse_command("arm 1500000000"),
            Some(GuardianCommand::Arm(Duration::from_millis(1500)))
        );
        assert_eq!(parse_command("arm soon"), None);
        assert_eq!(parse_command("fire"), None);
        let at = Instant::now() + Duration::from_secs(7);
        let back = from_monotonic(to_monotonic(at));
        let error = if back > at { back - at } else { at - back };
        assert!(error < Duration::from_millis(5), "{error:?}");
    }

    #[test]
    fn stops_the_process_named_in_postmaster_pid() {
        use std::os::unix::process::ExitStatusExt as _;

        let dir = tempfile::tempdir().unwrap();
        // A stand-in postmaster that, like PostgreSQL, sets its own SIGQUIT handling: a
        // test run started in the background inherits SIGQUIT ignored, which `sleep`
        // would keep.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import signal, time; signal.signal(signal.SIGQUIT, signal.SIG_DFL); \
                 print('ready', flush=True); time.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Armed only once the handler is in place, or the signal would be lost.
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n", child.id()),
        )
        .unwrap();
        let deadman = DeadMan::start(dir.path().to_owned()).unwrap();
        deadman.arm(Instant::now());
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(nix::libc::SIGQUIT));
        assert!(wait_for(&deadman, 1));
    }
}
