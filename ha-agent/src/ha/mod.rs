//! The HA loop's decision: a pure [`decide`] from an [`Observation`] to a [`Decision`].
//!
//! The loop runs observe → decide → act. *Observe* reads the DCS snapshot, the local
//! PostgreSQL and, when a decision asks for them ([`Action::ProbePeers`]), the peers'
//! `GET /patroni`; it also records how the last lease renewal went
//! ([`LeaseState::after_renewal`]). *Decide* is [`decide`], pure and table-tested.
//! *Act* performs the [`Decision`]: the [`LeaseStep`] first (renewing the lease is part of
//! acting, so a renewal failure shows up in the next observation), then the [`Effect`]s,
//! then the [`Action`].
//!
//! # Guarantees
//! - A primary is never kept past its lease: at `now >= valid_until`, on
//!   [`dcs_core::Error::LeaseLost`], or when the snapshot names another holder, the
//!   decision is [`DemoteMode::Immediate`] (unless the cluster is paused, as in Patroni).
//! - A renewal that failed without losing the lease (the DCS was unreachable or slow)
//!   keeps the primary running until `valid_until`: a blip shorter than that demotes
//!   nobody.
//! - Only the healthiest member races for a free lock: not `nofailover`, within
//!   `maximum_lag_on_failover` of `/status`, not behind the cluster's timeline
//!   (`check_timeline`, on unless configured `false`; the cluster's timeline includes the
//!   highest one a member announced, see [`TimelineHighWater`]), and no reachable peer
//!   that may promote is a running primary, on a later timeline, ahead in WAL on the same
//!   one, or equally far with a higher `failover_priority`.
//! - Paused, nothing is started, stopped, promoted or demoted automatically; only a
//!   failover to a named candidate proceeds.
//!
//! - A member without a lease whose name is in the leader key asks for the lock again: the
//!   store adopts the key if it is bound to this client's live lease or session (an
//!   acquire whose answer was lost), and otherwise reports it held until it expires. A
//!   restarted agent's running primary keeps running meanwhile, as in Patroni: racers that
//!   reach it see a running primary and stand down.
//!
//! # Assumptions
//! - The act step renews before it acts and skips actions that
//!   [need the lock](Action::needs_lock) when the renewal fails; after a `LeaseLost` it
//!   decides again at once.
//! - The loop fills [`Observation::peers`] only when asked ([`Action::ProbePeers`]) and
//!   decides again with the answers; a member missing from the answers counts as
//!   unreachable.
//! - A dead-man task outside the loop stops PostgreSQL at `valid_until` if the loop itself
//!   hangs; `decide` cannot help a loop that does not run.
//!
//! # Caveats
//! - Paused, a primary that lost its lease keeps running (Patroni's pause semantics: the
//!   operator is in charge, e.g. during DCS maintenance); only the dead-man task, if the
//!   loop arms it in pause, would stop it.
//! - Peers are the members of this snapshot; a member whose key expired is not asked
//!   (Patroni also asks the members of its previous snapshot).

mod decide;
mod decision;
mod observation;
mod race;
mod schedule;
#[cfg(test)]
mod tests;

pub use decide::decide;
pub use decision::{Action, Decision, DemoteMode, Effect, LeaseStep, StartRole};
pub use observation::{
    DataDir, LeaseState, LocalMember, LocalPostgres, LongAction, Observation, PeerReply,
    PeerStatus, PgState, Renewal, Settings, TimelineHighWater, WalPosition, config_warnings,
};
pub use schedule::{
    RestartStep, ScheduledRestart, Window, evaluate_restart, parse_scheduled_at, window,
};
