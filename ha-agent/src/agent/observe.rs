//! The observe step's I/O: the local PostgreSQL as `decide` sees it, and what the agent
//! publishes about itself (member key, REST API status).

use std::time::SystemTime;

use dcs_core::model::{MemberData, MemberState, Role};

use super::Agent;
use crate::api::{PostgresStatus, Xlog};
use crate::ha::{DataDir, LocalPostgres, LongAction, PgState, WalPosition};
use crate::postgres::{ControlData, ServerStatus};

/// The local PostgreSQL this cycle: what `decide` needs and the status query's answer.
pub(super) struct Local {
    pub(super) postgres: LocalPostgres,
    pub(super) status: Option<ServerStatus>,
}

impl Agent {
    /// Looks at the data directory and the server: running (and as what), starting, or
    /// stopped (and whether it last ran as a primary).
    pub(super) async fn observe_postgres(&mut self) -> Local {
        let unknown = |data_dir| Local {
            postgres: LocalPostgres {
                data_dir,
                state: PgState::Stopped { was_primary: false },
                timeline: None,
                wal: WalPosition::default(),
            },
            status: None,
        };
        let data_dir = match self.pg.data_dir_state().await {
            Ok(data_dir) => data_dir,
            Err(error) => {
                // A directory PostgreSQL cannot read: half a base backup, or damage.
                // `decide` sees it as empty (bootstrap or clone), which refuses to
                // overwrite anything that is there.
                if self.long.is_none() {
                    tracing::warn!("cannot read the data directory: {error}");
                }
                return unknown(DataDir::Empty);
            }
        };
        if data_dir == DataDir::Empty {
            return unknown(DataDir::Empty);
        }
        let running = self.pg.is_running().await.unwrap_or(false);
        if !running {
            self.streamed_timeline = None;
            let control = self.pg.control_data().await.ok();
            let was_primary = control.as_ref().is_some_and(ControlData::was_primary);
            let timeline = match &control {
                Some(control) => Some(self.stopped_timeline(control, was_primary).await),
                None => None,
            };
            return Local {
                postgres: LocalPostgres {
                    data_dir,
                    state: PgState::Stopped { was_primary },
                    timeline,
                    wal: WalPosition::default(),
                },
                status: None,
            };
        }
        match self.pg.status().await {
            Ok(mut status) => {
                status.timeline = self.running_timeline(&status);
                Local {
                    postgres: LocalPostgres {
                        data_dir,
                        state: if status.in_recovery {
                            PgState::Replica
                        } else {
                            PgState::Primary
                        },
                        timeline: status.timeline,
                        wal: status.wal,
                    },
                    status: Some(status),
                }
            }
            Err(error) => {
                tracing::debug!("PostgreSQL does not answer yet: {error}");
                Local {
                    postgres: LocalPostgres {
                        data_dir,
                        state: PgState::Starting,
                        timeline: None,
                        wal: WalPosition::default(),
                    },
                    status: None,
                }
            }
        }
    }

    /// A stopped server's timeline. `pg_control`'s checkpoint names the timeline of the
    /// last checkpoint (a replica's last restartpoint), which lags behind a promotion or a
    /// replayed switch; a former primary runs on its newest history file's timeline.
    async fn stopped_timeline(&self, control: &ControlData, was_primary: bool) -> u64 {
        let recorded = control.timeline.max(control.min_recovery_timeline);
        if !was_primary {
            return recorded;
        }
        match self.pg.newest_history_timeline().await {
            Ok(newest) => recorded.max(newest),
            Err(error) => {
                tracing::warn!("cannot list the timeline history files: {error}");
                recorded
            }
        }
    }

    /// A running server's timeline. A replica reports the timeline its WAL receiver
    /// streams, and without a receiver (its upstream is gone: exactly when the leader race
    /// asks) its last restartpoint's, which may be an older one: the highest timeline
    /// streamed since this postmaster started is kept, so the race does not see this
    /// replica behind where it is.
    fn running_timeline(&mut self, status: &ServerStatus) -> Option<u64> {
        let start = status.postmaster_start.map(f64::to_bits);
        if !status.in_recovery {
            self.streamed_timeline = None;
            return status.timeline;
        }
        let kept = self
            .streamed_timeline
            .filter(|kept| kept.postmaster_start == start)
            .map(|kept| kept.timeline);
        let timeline = status.timeline.max(kept);
        if status.is_streaming()
            && let Some(timeline) = timeline
        {
            self.streamed_timeline = Some(super::StreamedTimeline {
                postmaster_start: start,
                timeline,
            });
        }
        timeline
    }

    /// Refreshes the REST API's view of this node from this cycle's observation.
    pub(super) fn update_node(&mut self, local: &Local) {
        let holds_lease =
            self.lease.is_some() && self.lease_time_left().is_some_and(|left| !left.is_zero());
        let pending_restart_reason = self.pending_restart_reason(local);
        let node = &mut self.node;
        node.state = member_state(local, self.long.as_ref().map(|l| l.kind));
        node.role = role(local);
        node.holds_lease = holds_lease;
        node.paused = self.settings.pause;
        node.pending_restart = !pending_restart_reason.is_empty();
        node.pending_restart_reason = pending_restart_reason;
        node.scheduled_restart = self
            .scheduled_restart
            .as_ref()
            .map(crate::ha::ScheduledRestart::api_json);
        node.dcs_last_seen = self.dcs_last_seen;
        node.system_identifier = match &local.postgres.data_dir {
            DataDir::Initialized { system_id } => Some(system_id.clone()),
            DataDir::Empty => None,
        };
        node.postgres = local.status.as_ref().map(|status| PostgresStatus {
            postmaster_start_time: status.postmaster_start.and_then(unix_time),
            server_version: status.server_version,
            xlog: if status.in_recovery {
                Xlog::Replica {
                    received_location: status.wal.receive.or(status.wal.replay).unwrap_or_default(),
                    replayed_location: status.wal.replay.unwrap_or_default(),
                    replayed_timestamp: status.replay_timestamp.and_then(unix_time),
                    paused: status.replay_paused,
                }
            } else {
                Xlog::Primary {
                    location: status.wal.flush.unwrap_or_default(),
                }
            },
            timeline: status.timeline,
            replication_state: status.in_recovery.then(|| replication_state(status)),
            replication: status.wal_senders.clone(),
        });
    }

    /// This member's key, in Patroni's format.
    pub(super) fn member_data(&self, local: &Local) -> MemberData {
        let status = local.status.as_ref();
        let wal = local.postgres.wal_position();
        MemberData {
            conn_url: Some(self.config.conn_url()),
            api_url: Some(self.config.api_url()),
            state: self.node.state.clone(),
            role: self.node.role.clone(),
            version: Some(super::PATRONI_VERSION.to_owned()),
            tags: self.config.tags.member_tags(),
            // A position of 0 is "unknown", not "at the start": publishing it would
            // make this member look furthest behind (or, as a primary, confuse lag).
            xlog_location: status.and((wal > 0).then_some(wal)),
            replay_lsn: status.filter(|s| s.in_recovery).and_then(|s| s.wal.replay),
            receive_lsn: status.filter(|s| s.in_recovery).and_then(|s| s.wal.receive),
            replication_state: status.filter(|s| s.in_recovery).map(replication_state),
            timeline: local.postgres.timeline,
            extra: self.member_extra(),
        }
    }

    /// The settings waiting for a restart, as Patroni 4's `pending_restart_reason`: the
    /// value in effect and the one the agent configured (`?` for a setting changed
    /// outside it, e.g. by `ALTER SYSTEM`).
    fn pending_restart_reason(&self, local: &Local) -> serde_json::Map<String, serde_json::Value> {
        let Some(status) = local
            .status
            .as_ref()
            .filter(|s| !s.pending_restart.is_empty())
        else {
            return serde_json::Map::new();
        };
        let configured = self.pg.server_parameters().file;
        status
            .pending_restart
            .iter()
            .map(|(name, old_value)| {
                let new_value = configured
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map_or("?", |(_, value)| value.as_str());
                let diff = serde_json::json!({ "old_value": old_value, "new_value": new_value });
                (name.clone(), diff)
            })
            .collect()
    }

    /// The member key's optional fields this agent publishes.
    fn member_extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        if self.settings.pause {
            // Patroni's touch_member: `patronictl pause --wait` waits for this flag.
            extra.insert("pause".into(), true.into());
        }
        if self.node.pending_restart {
            extra.insert("pending_restart".into(), true.into());
            extra.insert(
                "pending_restart_reason".into(),
                self.node.pending_restart_reason.clone().into(),
            );
        }
        if self.checkpoint_pending {
            extra.insert("checkpoint_after_promote".into(), false.into());
        }
        if let Some(restart) = &self.scheduled_restart {
            extra.insert("scheduled_restart".into(), restart.member_json().into());
        }
        extra
    }
}

fn replication_state(status: &ServerStatus) -> String {
    if status.is_streaming() {
        "streaming".to_owned()
    } else {
        "in archive recovery".to_owned()
    }
}

fn member_state(local: &Local, long: Option<LongAction>) -> MemberState {
    let text = match long {
        Some(LongAction::Bootstrap) => "initializing new cluster",
        Some(LongAction::Basebackup) => "creating replica",
        Some(LongAction::Rewind) => "running pg_rewind",
        Some(LongAction::Restart) if local.status.is_none() => "starting",
        _ => match local.postgres.state {
            PgState::Primary | PgState::Replica => return MemberState::Running,
            PgState::Starting => "starting",
            PgState::Stopped { .. } => "stopped",
        },
    };
    MemberState::Other(text.to_owned())
}

fn role(local: &Local) -> Role {
    match (&local.postgres.data_dir, local.postgres.state) {
        (DataDir::Empty, _) => Role::Uninitialized,
        (_, PgState::Primary) => Role::Primary,
        (_, PgState::Stopped { was_primary: true }) => Role::Demoted,
        _ => Role::Replica,
    }
}

/// A time given as Unix seconds; `None` when out of range.
fn unix_time(seconds: f64) -> Option<SystemTime> {
    let since = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(since)
}

/// Unix seconds now, for `dcs_last_seen`.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
