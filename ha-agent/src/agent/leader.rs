//! The leader's housekeeping (`/status`, `/history`, member slots), the peers' answers
//! in the leader race, and the requests the REST API hands to the loop.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcs_core::model::{HistoryLine, Status, TimelineHistory, slot_name_from_member_name};
use dcs_core::{ClusterState, DcsExt as _};
use serde_json::Value;
use tokio::sync::oneshot;

use super::Agent;
use super::act::LongOutcome;
use super::observe::Local;
use crate::api::{LocalReply, LocalRequest};
use crate::config::Config;
use crate::ha::{LongAction, PeerReply, PgState, RestartStep};
use crate::postgres::{StopMode, conf};

/// How long a peer may take to answer `GET /patroni` in the leader race (Patroni's 2 s).
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the leader last did, so it does not redo it every cycle.
#[derive(Default)]
pub(super) struct Cache {
    /// The member slots last made to match.
    slots: Option<BTreeSet<String>>,
}

impl Agent {
    /// The leader's writes after each cycle: `/status` with its WAL position, `/history`
    /// once per new timeline, and one physical slot per other member.
    pub(super) async fn leader_housekeeping(&mut self, local: &Local, cluster: &ClusterState) {
        if self.lease.is_none() || local.postgres.state != PgState::Primary {
            self.leader_cache.slots = None;
            return;
        }
        let Some(status) = &local.status else { return };
        if let Some(optime) = status.wal.flush.filter(|&lsn| lsn > 0) {
            let value = Status {
                optime: Some(optime),
                ..Status::default()
            };
            if let Err(error) = self.dcs.write_status(&value).await {
                tracing::warn!("cannot write /status: {error}");
            }
        }
        if let Some(timeline) = status.timeline {
            self.update_history(cluster, timeline).await;
        }
        if super::use_slots(&self.dynamic) {
            self.sync_slots(cluster).await;
        }
    }

    /// Writes `/history` from the timeline's history file when it lacks the switch that
    /// started our timeline.
    async fn update_history(&self, cluster: &ClusterState, timeline: u64) {
        let recorded = cluster
            .history
            .as_ref()
            .map_or(1, |h| h.value.next_timeline());
        if timeline <= 1 || recorded >= timeline {
            return;
        }
        let path = self
            .pg
            .options()
            .data_dir
            .join("pg_wal")
            .join(format!("{timeline:08X}.history"));
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            tracing::warn!("cannot read {} for /history", path.display());
            return;
        };
        let modified = tokio::fs::metadata(&path)
            .await
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let mut lines = parse_history_file(&text);
        if let Some(last) = lines.last_mut() {
            last.timestamp = Some(iso_timestamp(modified));
            last.new_leader = Some(self.config.name.clone());
        }
        // Keep what earlier leaders recorded about earlier switches (timestamps, names).
        if let Some(old) = &cluster.history {
            for line in &mut lines {
                if let Some(known) = old.value.lines.iter().find(|l| l.timeline == line.timeline) {
                    line.timestamp.clone_from(&known.timestamp);
                    line.new_leader.clone_from(&known.new_leader);
                }
            }
        }
        match self.dcs.write_history(&TimelineHistory { lines }).await {
            Ok(_) => tracing::info!("recorded timeline {timeline} in /history"),
            Err(error) => tracing::warn!("cannot write /history: {error}"),
        }
    }

    /// Creates a slot for every other member and drops slots of members that are gone.
    async fn sync_slots(&mut self, cluster: &ClusterState) {
        let wanted: BTreeSet<String> = cluster
            .members
            .iter()
            .filter(|m| m.name != self.config.name)
            .map(|m| slot_name_from_member_name(&m.name))
            .collect();
        if self.leader_cache.slots.as_ref() == Some(&wanted) {
            return;
        }
        let existing = match self.pg.physical_slots().await {
            Ok(slots) => slots,
            Err(error) => {
                tracing::warn!("cannot list replication slots: {error}");
                return;
            }
        };
        let mut complete = true;
        for slot in &wanted {
            if !existing.iter().any(|(name, _)| name == slot) {
                match self.pg.create_slot(slot).await {
                    Ok(_) => tracing::info!("created replication slot {slot}"),
                    Err(error) => {
                        complete = false;
                        tracing::warn!("cannot create replication slot {slot}: {error}");
                    }
                }
            }
        }
        for (name, _) in &existing {
            if !wanted.contains(name) {
                match self.pg.drop_slot(name).await {
                    Ok(true) => tracing::info!("dropped replication slot {name}"),
                    // Still in use: try again next time.
                    Ok(false) => complete = false,
                    Err(error) => {
                        complete = false;
                        tracing::warn!("cannot drop replication slot {name}: {error}");
                    }
                }
            }
        }
        self.leader_cache.slots = complete.then_some(wanted);
    }

    /// Recomputes PostgreSQL's parameters from the dynamic and local configuration and,
    /// when the file changed, reloads a running server.
    pub(super) async fn apply_parameters(&mut self) {
        let merged = conf::merged_parameters(&self.dynamic, &self.config.postgresql.parameters);
        if self.pg.options().parameters == merged {
            return;
        }
        self.pg.options_mut().parameters = merged;
        if self.long.is_some() || !self.pg.is_running().await.unwrap_or(false) {
            return;
        }
        match self.pg.write_config(self.standby.as_ref()).await {
            Ok(true) => match self.pg.reload().await {
                Ok(()) => {
                    tracing::info!("reloaded PostgreSQL with the changed parameters");
                    self.call_back_reload();
                }
                Err(error) => tracing::warn!("reload failed: {error}"),
            },
            Ok(false) => {}
            Err(error) => tracing::warn!("cannot write postgresql.conf: {error}"),
        }
    }

    /// Re-reads the configuration file (SIGHUP, `POST /reload`) and applies what can
    /// change without a restart.
    pub(super) async fn reload(&mut self) -> Result<String, String> {
        if let Some(path) = &self.config_path {
            let (config, warnings) = Config::load_with_env(path, std::env::vars())
                .map_err(|error| format!("invalid configuration in {}: {error}", path.display()))?;
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            if config.scope != self.config.scope || config.name != self.config.name {
                return Err("scope and name cannot change while the agent runs".into());
            }
            self.pg
                .options_mut()
                .pg_hba
                .clone_from(&config.postgresql.pg_hba);
            self.config = config;
        }
        self.node.tags = self.config.tags.member_tags();
        self.node.noloadbalance = self.config.tags.noloadbalance;
        // Force the parameters to be rewritten and the server reloaded.
        self.pg.options_mut().parameters.clear();
        self.apply_parameters().await;
        if self.pg.is_running().await.unwrap_or(false) {
            self.pg.reload().await.map_err(|error| error.to_string())?;
            self.call_back_reload();
        }
        Ok("reloaded the configuration".into())
    }

    /// Restarts PostgreSQL in its current role as a long action; `reply` (a REST request
    /// waiting) gets the outcome. Refused while another long action runs or PostgreSQL is
    /// not running, as Patroni's `restart` does.
    async fn start_restart(&mut self, reply: Option<oneshot::Sender<LocalReply>>) {
        let refusal = if let Some(long) = &self.long {
            Some(format!("{} is in progress", long.kind.as_str()))
        } else if !self.pg.is_running().await.unwrap_or(false) {
            Some("postgres is not running".to_owned())
        } else {
            None
        };
        if let Some(message) = refusal {
            if let Some(reply) = reply {
                let _ = reply.send(LocalReply {
                    status: 503,
                    message,
                });
            } else {
                tracing::warn!("scheduled restart: {message}");
            }
            return;
        }
        self.callback_memory.restart_requested = true;
        let pg = self.pg.clone();
        let standby = self.standby.clone();
        self.start_long(LongAction::Restart, reply, async move {
            match pg.restart(StopMode::Fast, standby.as_ref()).await {
                Ok(()) => LongOutcome::Done("restarted successfully".into()),
                Err(error) => LongOutcome::Failed(format!("restart failed: {error}")),
            }
        });
    }

    /// `on_reload`, with the role PostgreSQL was last seen in.
    fn call_back_reload(&mut self) {
        if let Some(seen) = self.callback_memory.last {
            self.callbacks
                .call(super::callbacks::Action::Reload, seen.role());
        }
    }

    /// Keeps `restart` for later (Patroni's `schedule_future_restart`): one at a time,
    /// with the postmaster's start time now, so that a restart in between cancels it.
    fn schedule_restart(&mut self, mut restart: crate::ha::ScheduledRestart) -> LocalReply {
        if self.scheduled_restart.is_some() {
            return LocalReply {
                status: 409,
                message: "Another restart is already scheduled".into(),
            };
        }
        restart.postmaster_start_time = self
            .node
            .postgres
            .as_ref()
            .and_then(|pg| pg.postmaster_start_time);
        tracing::info!(
            "restart scheduled at {}",
            crate::civil::python_isoformat(restart.at, 'T')
        );
        self.scheduled_restart = Some(restart);
        LocalReply {
            status: 202,
            message: "Restart scheduled".into(),
        }
    }

    /// Forgets the scheduled restart (Patroni's `delete_future_restart`).
    fn cancel_restart(&mut self) -> LocalReply {
        if self.scheduled_restart.take().is_some() {
            tracing::info!("scheduled restart deleted");
            LocalReply {
                status: 200,
                message: "scheduled restart deleted".into(),
            }
        } else {
            LocalReply {
                status: 404,
                message: "no restarts are scheduled".into(),
            }
        }
    }

    /// Patroni's `evaluate_scheduled_restart`, after a cycle's action in a cluster with a
    /// leader: runs the scheduled restart when due and its filters still match, and
    /// forgets it once run, stale or made moot by a restart in between.
    pub(super) async fn evaluate_scheduled_restart(&mut self) {
        let Some(restart) = &self.scheduled_restart else {
            return;
        };
        if self.long.is_some() {
            return;
        }
        let started = self
            .node
            .postgres
            .as_ref()
            .and_then(|pg| pg.postmaster_start_time);
        let step = crate::ha::evaluate_restart(
            restart,
            std::time::SystemTime::now(),
            self.settings.loop_wait,
            self.settings.pause,
            started,
        );
        match step {
            RestartStep::Keep => {}
            RestartStep::Drop(reason) => {
                tracing::warn!("{reason}");
                self.scheduled_restart = None;
            }
            RestartStep::Run => {
                let Some(restart) = self.scheduled_restart.take() else {
                    return;
                };
                let at = crate::civil::python_isoformat(restart.at, 'T');
                if crate::api::restart_matches(&restart.filters, &self.node) {
                    tracing::info!("manual scheduled restart at {at}");
                    self.start_restart(None).await;
                } else {
                    tracing::warn!(
                        "scheduled restart at {at}: restart conditions are not satisfied"
                    );
                }
            }
        }
    }

    /// Carries out a request from the REST API between cycles.
    pub(super) async fn handle_request(&mut self, request: LocalRequest) {
        match request {
            LocalRequest::Reload { reply } => {
                let answer = match self.reload().await {
                    Ok(_) => LocalReply {
                        status: 202,
                        message: "reload scheduled".into(),
                    },
                    Err(message) => LocalReply {
                        status: 503,
                        message,
                    },
                };
                let _ = reply.send(answer);
            }
            LocalRequest::Restart { reply } => self.start_restart(Some(reply)).await,
            LocalRequest::ScheduleRestart { restart, reply } => {
                let _ = reply.send(self.schedule_restart(restart));
            }
            LocalRequest::CancelRestart { reply } => {
                let _ = reply.send(self.cancel_restart());
            }
            LocalRequest::Reinitialize {
                force,
                from_leader: _,
                reply,
            } => {
                let refusal = if self.lease.is_some() {
                    Some("I am the leader, can not reinitialize".to_owned())
                } else if self
                    .last_cluster
                    .as_ref()
                    .is_none_or(|c| c.leader.is_none())
                {
                    Some("Cluster has no leader, can not reinitialize".to_owned())
                } else {
                    self.long
                        .as_ref()
                        .filter(|_| !force)
                        .map(|long| format!("{} is in progress", long.kind.as_str()))
                };
                if let Some(message) = refusal {
                    let _ = reply.send(LocalReply {
                        status: 503,
                        message,
                    });
                    return;
                }
                if let Some(long) = self.long.take() {
                    long.task.abort();
                }
                if let Err(error) = self.pg.stop(StopMode::Immediate).await {
                    let _ = reply.send(LocalReply {
                        status: 503,
                        message: format!("cannot stop PostgreSQL: {error}"),
                    });
                    return;
                }
                let dir = self.pg.options().data_dir.clone();
                let answer = match tokio::fs::remove_dir_all(&dir).await {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => LocalReply {
                        status: 503,
                        message: format!("cannot remove {}: {error}", dir.display()),
                    },
                    // The next cycle sees an empty data directory and clones it again.
                    _ => LocalReply {
                        status: 200,
                        message: "reinitialize started".into(),
                    },
                };
                self.standby = None;
                let _ = reply.send(answer);
            }
        }
    }
}

/// Asks one peer `GET /patroni`; `None` when it does not answer in time or its answer
/// cannot be read (such a peer does not veto, as in Patroni).
pub(super) async fn ask_peer(url: &str) -> Option<PeerReply> {
    let response = crate::http::get(url, PEER_TIMEOUT).await.ok()?;
    let document: Value = serde_json::from_str(&response.body).ok()?;
    peer_reply(&document)
}

/// Reads what the leader race needs from a `/patroni` document (Patroni's
/// `_MemberStatus.from_api_response`).
pub(super) fn peer_reply(document: &Value) -> Option<PeerReply> {
    let object = document.as_object()?;
    let role = object.get("role").and_then(Value::as_str).unwrap_or("");
    let in_recovery = !matches!(role, "primary" | "master" | "standby_leader");
    let xlog = object.get("xlog").or_else(|| object.get("wal"));
    let location = |key: &str| xlog.and_then(|x| x.get(key)).and_then(Value::as_u64);
    let wal_position = location("location").or_else(|| {
        match (location("received_location"), location("replayed_location")) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    });
    let tags = object.get("tags");
    let truthy = |value: Option<&Value>| match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
        }
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    };
    let priority = tags
        .and_then(|t| t.get("failover_priority"))
        .and_then(|p| p.as_i64().or_else(|| p.as_str()?.parse().ok()));
    let nofailover =
        truthy(tags.and_then(|t| t.get("nofailover"))) || priority.is_some_and(|p| p <= 0);
    Some(PeerReply {
        in_recovery,
        wal_position,
        timeline: object.get("timeline").and_then(Value::as_u64),
        nofailover,
        failover_priority: if nofailover { 0 } else { priority.unwrap_or(1) },
        watchdog_failed: truthy(object.get("watchdog_failed")),
    })
}

/// Reads a timeline history file (`<parent tli>\t<switch lsn>\t<reason>` per line).
fn parse_history_file(text: &str) -> Vec<HistoryLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let timeline = fields.next()?.trim().parse().ok()?;
            let lsn = crate::postgres::parse_lsn(fields.next()?)?;
            Some(HistoryLine {
                timeline,
                lsn,
                reason: fields.next().unwrap_or_default().trim().to_owned(),
                timestamp: None,
                new_leader: None,
            })
        })
        .collect()
}

/// `2024-09-24T12:00:00.250000+00:00`, Python's `isoformat()` of an aware UTC time, as
/// Patroni writes history timestamps.
fn iso_timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    format!(
        "{}.{:06}+00:00",
        crate::civil::format_utc(seconds, 'T'),
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn peers_are_read_as_patroni_reads_them() {
        let primary =
            peer_reply(&json!({"role": "primary", "xlog": {"location": 100}, "timeline": 2}))
                .unwrap();
        assert!(!primary.in_recovery);
        assert_eq!(
            (primary.wal_position, primary.timeline),
            (Some(100), Some(2))
        );

        let replica = peer_reply(&json!({
            "role": "replica",
            "xlog": {"received_location": 90, "replayed_location": 80},
            "tags": {"failover_priority": "3"}
        }))
        .unwrap();
        assert!(replica.in_recovery);
        assert_eq!(replica.wal_position, Some(90));
        assert_eq!(replica.failover_priority, 3);

        let excluded =
            peer_reply(&json!({"role": "replica", "tags": {"nofailover": "yes"}})).unwrap();
        assert!(excluded.nofailover);
        assert_eq!(
            (excluded.wal_position, excluded.failover_priority),
            (None, 0)
        );
        assert!(peer_reply(&json!("not a document")).is_none());
    }

    #[test]
    fn history_files_become_history_lines() {
        let lines =
            parse_history_file("1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tx\n");
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].timeline, lines[0].lsn), (1, 0x0300_0060));
        assert_eq!(lines[0].reason, "no recovery target specified");
        assert_eq!((lines[1].timeline, lines[1].lsn), (2, 0x0500_0000));
    }

    #[test]
    fn history_timestamps_are_python_isoformat() {
        let at = UNIX_EPOCH + Duration::from_micros(1_727_179_200_250_001);
        assert_eq!(iso_timestamp(at), "2024-09-24T12:00:00.250001+00:00");
    }
}
