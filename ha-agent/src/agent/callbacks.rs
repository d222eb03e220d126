//! `postgresql.callbacks`: the scripts Patroni runs when PostgreSQL starts, stops,
//! restarts, reloads or changes role, typically to move a virtual IP or tell a service
//! registry. Each runs as `<command> <action> <role> <scope>` without a shell, in the
//! background; a callback still running when the next one is due is killed with its
//! children first (Patroni's `CallbackExecutor`).
//!
//! Which callback a cycle calls is decided by the pure [`transition`] from what the loop
//! saw of PostgreSQL last time and now; reloads and the agent's own shutdown call theirs
//! directly.

use std::collections::BTreeMap;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A callback, named as in the configuration and passed as the script's first argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Action {
    Start,
    Stop,
    Restart,
    Reload,
    RoleChange,
}

impl Action {
    pub(super) const ALL: [Self; 5] = [
        Self::Start,
        Self::Stop,
        Self::Restart,
        Self::Reload,
        Self::RoleChange,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Start => "on_start",
            Self::Stop => "on_stop",
            Self::Restart => "on_restart",
            Self::Reload => "on_reload",
            Self::RoleChange => "on_role_change",
        }
    }
}

/// PostgreSQL as one cycle saw it running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    /// Running as a primary (not in recovery).
    pub(super) primary: bool,
    /// `pg_postmaster_start_time()` (its bits): a different one is a restart.
    pub(super) postmaster: Option<u64>,
}

impl Seen {
    pub(super) fn role(self) -> &'static str {
        if self.primary { "primary" } else { "replica" }
    }
}

/// What the loop remembers between cycles to choose a callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Memory {
    /// PostgreSQL last cycle, if it was running.
    pub(super) last: Option<Seen>,
    /// The role it last ran as (kept while it is stopped): a start in another role is a
    /// role change, as after a demotion.
    pub(super) last_primary: Option<bool>,
    /// A restart was asked for (REST API, scheduled): the next start is `on_restart`.
    pub(super) restart_requested: bool,
}

/// Patroni's choice of callback for what changed between two cycles, and the memory for
/// the next one. A server seen for the first time (the agent started, or it was stopped)
/// calls `on_start`, or `on_role_change` if it runs in another role than before; a
/// promotion or demotion of a running server calls `on_role_change`; a new postmaster
/// after a requested restart calls `on_restart`. A stop calls nothing here (Patroni calls
/// `on_stop` only when it stops PostgreSQL itself, not for a demotion's stop).
pub(super) fn transition(memory: Memory, now: Option<Seen>) -> (Option<(Action, Seen)>, Memory) {
    let Some(now) = now else {
        return (
            None,
            Memory {
                last: None,
                ..memory
            },
        );
    };
    let next = Memory {
        last: Some(now),
        last_primary: Some(now.primary),
        restart_requested: memory.restart_requested,
    };
    let role_changed = memory.last_primary.is_some_and(|was| was != now.primary);
    let same_postmaster = memory
        .last
        .is_some_and(|last| last.postmaster == now.postmaster);
    let action = if same_postmaster {
        role_changed.then_some(Action::RoleChange)
    } else if role_changed {
        Some(Action::RoleChange)
    } else if memory.restart_requested {
        Some(Action::Restart)
    } else {
        Some(Action::Start)
    };
    let next = Memory {
        restart_requested: memory.restart_requested && action.is_none(),
        ..next
    };
    (action.map(|action| (action, now)), next)
}

/// Runs the configured callbacks, one at a time.
#[derive(Debug, Default)]
pub(super) struct Callbacks {
    commands: BTreeMap<Action, Vec<String>>,
    scope: String,
    running: Option<tokio::process::Child>,
}

impl Callbacks {
    /// The callbacks of `postgresql.callbacks` (already checked by the config parser).
    pub(super) fn new(configured: &BTreeMap<String, String>, scope: &str) -> Self {
        let commands = Action::ALL
            .into_iter()
            .filter_map(|action| {
                let line = configured.get(action.as_str())?;
                let words = crate::config::split_command(line).filter(|w| !w.is_empty())?;
                Some((action, words))
            })
            .collect();
        Self {
            commands,
            scope: scope.to_owned(),
            running: None,
        }
    }

    /// Starts `action`'s script with `role`, if one is configured, after killing a
    /// previous one that is still running. Never waits for the script; failures to start
    /// it are logged.
    pub(super) fn call(&mut self, action: Action, role: &str) {
        let Some(words) = self.commands.get(&action) else {
            return;
        };
        if let Some(mut previous) = self.running.take()
            && matches!(previous.try_wait(), Ok(None))
        {
            if let Some(pid) = previous.id().and_then(|id| i32::try_from(id).ok()) {
                tracing::info!(
                    "killing the previous callback (pid {pid}) to run {}",
                    action.as_str()
                );
                // Its own process group: the script and whatever it started.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // Reaped in the background so that no zombie is left.
            tokio::spawn(async move {
                let _ = previous.wait().await;
            });
        }
        let Some((program, arguments)) = words.split_first() else {
            return;
        };
        let spawned = tokio::process::Command::new(program)
            .args(arguments)
            .args([action.as_str(), role, &self.scope])
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => {
                tracing::info!(
                    "calling {} callback: {} {role}",
                    action.as_str(),
                    words.join(" ")
                );
                self.running = Some(child);
            }
            Err(error) => tracing::error!(
                "cannot run the {} callback {program}: {error}",
                action.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: Seen = Seen {
        primary: true,
        postmaster: Some(1),
    };
    const REPLICA: Seen = Seen {
        primary: false,
        postmaster: Some(1),
    };

    fn restarted(seen: Seen) -> Seen {
        Seen {
            postmaster: Some(2),
            ..seen
        }
    }

    #[test]
    fn callbacks_follow_what_the_loop_saw_of_postgres() {
        let fresh = Memory::default();
        let ran = |seen: Seen| Memory {
            last: Some(seen),
            last_primary: Some(seen.primary),
            restart_requested: false,
        };
        let stopped_after = |seen: Seen| Memory {
            last: None,
            ..ran(seen)
        };
        let asked = |memory: Memory| Memory {
            restart_requested: true,
            ..memory
        };
        let cases = [
            (
                "first sight of a running primary",
                fresh,
                Some(PRIMARY),
                Some(Action::Start),
            ),
            ("nothing changed", ran(REPLICA), Some(REPLICA), None),
            (
                "promoted",
                ran(REPLICA),
                Some(PRIMARY),
                Some(Action::RoleChange),
            ),
            (
                "started again as a replica after being primary (demoted)",
                stopped_after(PRIMARY),
                Some(REPLICA),
                Some(Action::RoleChange),
            ),
            (
                "started again in the same role (after a crash)",
                stopped_after(REPLICA),
                Some(REPLICA),
                Some(Action::Start),
            ),
            (
                "restarted as asked, between two cycles",
                asked(ran(REPLICA)),
                Some(restarted(REPLICA)),
                Some(Action::Restart),
            ),
            (
                "restarted as asked, seen stopped in between",
                asked(stopped_after(PRIMARY)),
                Some(PRIMARY),
                Some(Action::Restart),
            ),
            (
                "a new postmaster nobody asked for",
                ran(PRIMARY),
                Some(restarted(PRIMARY)),
                Some(Action::Start),
            ),
            ("stopped", ran(PRIMARY), None, None),
        ];
        for (name, memory, now, expected) in cases {
            let (action, _) = transition(memory, now);
            assert_eq!(action.map(|(a, _)| a), expected, "{name}");
        }
        // A requested restart is remembered until its start is seen, then forgotten.
        let (_, memory) = transition(asked(ran(REPLICA)), None);
        assert!(memory.restart_requested);
        let (_, memory) = transition(memory, Some(restarted(REPLICA)));
        assert!(!memory.restart_requested);
    }
}
