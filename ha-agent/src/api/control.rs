//! What the write side of the API needs from the rest of the agent: the DCS, the HA
//! loop's request queue and the credentials it checks.

use std::sync::Arc;

use dcs_core::Dcs;
use tokio::sync::{mpsc, oneshot};

use super::Allowlist;
use crate::config::Credentials;
use crate::ha::ScheduledRestart;

/// The write side's handles, given to [`serve`](super::serve). Without one, every
/// authenticated endpoint answers 404 (a read-only API).
#[derive(Clone)]
pub struct Control {
    /// The cluster's store: `/switchover`, `/failover` and `/config` write their keys here.
    pub dcs: Arc<dyn Dcs>,
    /// The HA loop's queue for what only it may do to PostgreSQL.
    pub requests: mpsc::Sender<LocalRequest>,
    /// `restapi.authentication`: Basic credentials every write request must carry; `None`
    /// lets anyone write, as Patroni does without the section.
    pub authentication: Option<Credentials>,
    /// `restapi.allowlist` (and `allowlist_include_members`): the client addresses that
    /// may write at all, checked before the credentials; `None`: any address.
    pub allowlist: Option<Allowlist>,
}

/// A request the HA loop carries out between cycles, so that it never races the loop's
/// own actions on PostgreSQL. The loop answers on `reply` once it is done (or refused).
#[derive(Debug)]
pub enum LocalRequest {
    /// `POST /restart`: restart PostgreSQL in its current role.
    Restart {
        /// The answer.
        reply: oneshot::Sender<LocalReply>,
    },
    /// `POST /restart` with a `schedule`: keep this restart and carry it out when due.
    /// Answered 202 when kept, 409 when another one is already scheduled.
    ScheduleRestart {
        /// What and when; the loop fills in the postmaster's start time.
        restart: ScheduledRestart,
        /// The answer.
        reply: oneshot::Sender<LocalReply>,
    },
    /// `DELETE /restart`: forget the scheduled restart (200), or 404 without one.
    CancelRestart {
        /// The answer.
        reply: oneshot::Sender<LocalReply>,
    },
    /// `POST /reload`: re-read the configuration file and reload PostgreSQL.
    Reload {
        /// The answer.
        reply: oneshot::Sender<LocalReply>,
    },
    /// `POST /reinitialize`: wipe the data directory and clone it again from the leader.
    Reinitialize {
        /// Stop a running PostgreSQL first instead of refusing.
        force: bool,
        /// Clone from the leader even when a `clonefrom` member exists.
        from_leader: bool,
        /// The answer.
        reply: oneshot::Sender<LocalReply>,
    },
}

/// The HA loop's answer to a [`LocalRequest`]: the status code and text Patroni sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// 200 done, 202 accepted, 503 refused or failed, ...
    pub status: u16,
    /// The body text (`restarted successfully`, `I am the leader, can not reinitialize`).
    pub message: String,
}
