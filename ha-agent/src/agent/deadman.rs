//! The dead-man switch: a thread, independent of the HA loop and of the async runtime,
//! that stops PostgreSQL at once when the leader lease is about to run out unrenewed.
//!
//! The loop arms it with a deadline slightly before each renewed lease's `valid_until`
//! and disarms it once PostgreSQL no longer runs as a primary without a lease. If the
//! deadline passes while armed — the loop is stuck in a slow call, the runtime is
//! starved, renewals keep failing — the thread sends `SIGQUIT` to the postmaster
//! (PostgreSQL's immediate shutdown, what `pg_ctl stop -m immediate` sends): the server
//! stops accepting commits before another member can hold the lock.
//!
//! A plain OS thread and a signal, not a task and a `pg_ctl` run, so that neither a
//! blocked runtime nor a process table or disk too busy to start a program can delay it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The handle the loop keeps; dropping it ends the thread without firing.
pub struct DeadMan {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    deadline: Option<Instant>,
    fired: u64,
    stop: bool,
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
            }),
            wake: Condvar::new(),
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
        self.shared.lock().deadline = Some(deadline);
        self.shared.wake.notify_one();
    }

    /// Disarms: PostgreSQL runs without a lease only as a replica now, or is stopped.
    pub fn disarm(&self) {
        self.shared.lock().deadline = None;
        self.shared.wake.notify_one();
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
        self.shared.wake.notify_one();
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
    fn stops_the_process_named_in_postmaster_pid() {
        use std::os::unix::process::ExitStatusExt as _;

        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
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
