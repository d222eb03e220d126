//! Health checks: which status code each path answers, exactly as Patroni's `do_GET`.

use std::time::Instant;

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, Role};
use serde_json::Value;

use super::status::{NodeStatus, is_standby_cluster, is_sync_standby};

/// The health check a path selects.
///
/// Patroni matches *substrings* of the path, in this order, so `/replica`,
/// `/replica/x` and `/xreplica` are all [`HealthCheck::Replica`]; `/` is
/// [`HealthCheck::Primary`]. A path that matches nothing is [`HealthCheck::None`], which
/// always answers 503 (Patroni's fallback for unknown `GET` paths and for `HEAD /patroni`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    /// `/standby-leader`, `/standby_leader`: the leader of a standby cluster.
    StandbyLeader,
    /// `/leader`: holds the lock, as primary or as standby leader.
    Leader,
    /// `/`, `/primary`, `/master`, `/read-write`: holds the lock outside a standby cluster.
    Primary,
    /// `/replica` (`?lag=`, `?tag_<k>=<v>`): a running replica taking read traffic.
    Replica,
    /// `/read-only`: the primary, the standby leader, or what `/replica` accepts.
    ReadOnly,
    /// `/health`: PostgreSQL is running.
    Health,
    /// `/sync`, `/synchronous`: a synchronous standby (never, until sync mode exists).
    Sync,
    /// `/async`, `/asynchronous`: a replica that is not a synchronous standby.
    Async,
    /// `/read-only-sync`, `/read-only-synchronous`: the leader or a synchronous standby.
    ReadOnlySync,
    /// `/quorum`, `/read-only-quorum` (4.x): quorum commit is not implemented, so 503,
    /// or 200 on the leader for `/read-only-quorum`.
    Quorum {
        /// `/read-only-quorum`: the leader also answers 200.
        or_leader: bool,
    },
    /// Nothing above: always 503.
    None,
}

impl HealthCheck {
    /// The check for `path` (without the query), by Patroni's substring rules.
    #[must_use]
    pub fn from_path(path: &str) -> Self {
        let path = if path == "/" { "/primary" } else { path };
        if path.contains("standby_leader") || path.contains("standby-leader") {
            Self::StandbyLeader
        } else if path.contains("leader") {
            Self::Leader
        } else if ["master", "primary", "read-write"]
            .iter()
            .any(|p| path.contains(p))
        {
            Self::Primary
        } else if path.contains("replica") {
            Self::Replica
        } else if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
            Self::ReadOnly
        } else if path.contains("health") {
            Self::Health
        } else {
            match path {
                "/sync" | "/synchronous" => Self::Sync,
                "/async" | "/asynchronous" => Self::Async,
                "/read-only-sync" | "/read-only-synchronous" => Self::ReadOnlySync,
                "/quorum" => Self::Quorum { or_leader: false },
                "/read-only-quorum" => Self::Quorum { or_leader: true },
                _ => Self::None,
            }
        }
    }

    /// Leader paths ignore `?tag_` parameters.
    fn ignores_tags(self) -> bool {
        matches!(self, Self::StandbyLeader | Self::Leader | Self::Primary)
    }
}

/// A request's query string, decoded like Python's `parse_qs`: `+` and `%XX` decoded,
/// empty values dropped, the first value of a repeated key wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=1&b=2` (without the `?`).
    #[must_use]
    pub fn parse(query: &str) -> Self {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in query.split(['&', ';']) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let (key, value) = (percent_decode(key), percent_decode(value));
            if value.is_empty() || params.iter().any(|(k, _)| *k == key) {
                continue;
            }
            params.push((key, value));
        }
        Self { params }
    }

    /// The first value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `?lag=`: bytes, with an optional unit (`16MB`, `1kB`, base 1024). Absent or
    /// unparsable means no limit, as in Patroni.
    #[must_use]
    pub fn max_lag(&self) -> Option<u64> {
        self.get("lag").and_then(parse_bytes)
    }

    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("tag_")?, v.as_str())))
    }
}

/// The status code of health check `check` for `node`, with the last `cluster` view
/// (`None` when the DCS is unreachable). Patroni 3.0.2's `do_GET`, with 4.x's quorum paths.
#[must_use]
pub fn health_status(
    check: HealthCheck,
    query: &Query,
    node: &NodeStatus,
    cluster: Option<&ClusterState>,
) -> u16 {
    let role = &node.role;
    let running = node.state == MemberState::Running;
    let leader_optime = cluster
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.value.optime)
        .unwrap_or(0);
    let max_lag = query.max_lag().unwrap_or(u64::MAX);
    let lagging =
        leader_optime > 0 && leader_optime > node.replayed_location().saturating_add(max_lag);
    let mut replica = code(!node.noloadbalance && !lagging && *role == Role::Replica && running);

    let (leader, primary, standby_leader);
    if cluster.is_none() && node.paused {
        // Without a DCS view in maintenance mode, Patroni trusts PostgreSQL's role.
        leader = code(matches!(role, Role::Primary | Role::StandbyLeader));
        primary = code(*role == Role::Primary);
        standby_leader = code(*role == Role::StandbyLeader);
    } else if node.holds_lease {
        leader = 200;
        if is_standby_cluster(cluster) {
            primary = 503;
            replica = 503;
            standby_leader = code(matches!(role, Role::Replica | Role::StandbyLeader));
        } else {
            primary = 200;
            standby_leader = 503;
        }
    } else {
        (leader, primary, standby_leader) = (503, 503, 503);
    }
    let on_top = primary == 200 || standby_leader == 200;

    let status = match check {
        HealthCheck::StandbyLeader => standby_leader,
        HealthCheck::Leader => leader,
        HealthCheck::Primary => primary,
        HealthCheck::Replica => replica,
        HealthCheck::ReadOnly => {
            if on_top {
                200
            } else {
                replica
            }
        }
        HealthCheck::Health => code(running),
        // The synchronous checks need a DCS view (`elif cluster:` in Patroni).
        _ if cluster.is_none() => 503,
        HealthCheck::Sync | HealthCheck::Async | HealthCheck::ReadOnlySync => {
            let synchronous = is_sync_standby(&node.name, role, cluster);
            match (check, synchronous) {
                (HealthCheck::ReadOnlySync, _) if on_top => 200,
                (HealthCheck::Sync | HealthCheck::ReadOnlySync, true)
                | (HealthCheck::Async, false) => replica,
                _ => 503,
            }
        }
        HealthCheck::Quorum { or_leader } => code(or_leader && on_top),
        HealthCheck::None => 503,
    };
    if status == 200 && !check.ignores_tags() && !tags_match(query, node) {
        return 503;
    }
    status
}

/// `GET /liveness`: 200 while paused or while the HA loop is less than `ttl` late
/// (`2 * ttl` unless running as primary: a stuck replica harms nobody as fast).
#[must_use]
pub fn liveness_status(node: &NodeStatus, now: Instant) -> u16 {
    let is_primary = node.role == Role::Primary && node.state == MemberState::Running;
    let threshold = if is_primary { node.ttl } else { node.ttl * 2 };
    code(node.paused || node.next_run + threshold > now)
}

/// `GET /readiness` (Patroni 3.0.2): 200 for the lock holder, or while PostgreSQL runs
/// and the DCS answers.
#[must_use]
pub fn readiness_status(node: &NodeStatus, cluster: Option<&ClusterState>) -> u16 {
    code(node.holds_lease || (node.state == MemberState::Running && cluster.is_some()))
}

fn code(ok: bool) -> u16 {
    if ok { 200 } else { 503 }
}

/// Every `?tag_<k>=<v>` must equal the node's tag `k`; a non-string tag compares as
/// Python's `str(value).lower()` (`true`, `1`).
fn tags_match(query: &Query, node: &NodeStatus) -> bool {
    query.tags().all(|(key, wanted)| match node.tags.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s == wanted,
        Some(other) => other.to_string().to_lowercase() == wanted,
    })
}

/// Patroni's `parse_int(value, 'B')` for the forms people write: an integer (decimal or
/// `0x` hex) or a decimal fraction, then an optional unit `B`, `kB`, `MB`, `GB`, `TB`.
fn parse_bytes(value: &str) -> Option<u64> {
    let value = value.trim();
    let (number, unit) = if let Some(hex) = value.strip_prefix("0x").or(value.strip_prefix("0X")) {
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        (
            u64::from_str_radix(&hex[..end], 16).ok()? as f64,
            &hex[end..],
        )
    } else {
        let end = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(value.len());
        (value[..end].parse::<f64>().ok()?, &value[end..])
    };
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    #[allow(clippy::cast_sign_loss, reason = "the number has no minus sign")]
    Some((number * multiplier as f64).round() as u64)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
