//! Health checks: which status code each path answers, exactly as Patroni's `do_GET`.

use std::time::Instant;

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, Role};
use serde_json::Value;

use super::status::{NodeStatus, Xlog, is_standby_cluster, is_sync_standby};

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

/// Which position of a replica `/readiness?mode=` measures its lag from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagMode {
    /// `mode=apply` (the default): the replayed position.
    Apply,
    /// `mode=write`: the received position.
    Write,
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

    /// `?lag=` in bytes, read as Patroni's `parse_int(value, 'B')`: an integer (decimal,
    /// `0x` hex, `0` octal) or a decimal fraction, then an optional unit `B`, `kB`, `MB`,
    /// `GB`, `TB` (base 1024). `None` when absent or unparsable; what that means is the
    /// caller's (no limit for `/replica`, `maximum_lag_on_failover` for `/readiness`).
    /// May be negative, as in Patroni: then every replica counts as lagging.
    #[must_use]
    pub fn max_lag(&self) -> Option<i64> {
        self.get("lag").and_then(parse_bytes)
    }

    /// `?mode=` of `/readiness`: [`LagMode::Write`] only for `write`, else
    /// [`LagMode::Apply`] (absent, empty or anything else), as in Patroni 4.x.
    #[must_use]
    pub fn lag_mode(&self) -> LagMode {
        if self.get("mode") == Some("write") {
            LagMode::Write
        } else {
            LagMode::Apply
        }
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
    // Python's unbounded ints: a negative `?lag=` must not wrap.
    let max_lag = query.max_lag().unwrap_or(i64::MAX);
    let lagging = leader_optime > 0
        && i128::from(leader_optime) > i128::from(node.replayed_location()) + i128::from(max_lag);
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

/// `GET /readiness`, Patroni 4.x's `_readiness`: 200 for the lock holder; otherwise 200
/// only for a replica that
///
/// 1. runs PostgreSQL,
/// 2. streams from its upstream (`replication_state` is `streaming`),
/// 3. has a `cluster` view (without one: 200 only while failsafe mode is active), and
/// 4. is at most `?lag=` bytes behind `/status`'s optime, measured from the replayed
///    position, or from the received one with `?mode=write` ([`Query::lag_mode`]).
///    Without a readable `?lag=` the limit is the cluster's `maximum_lag_on_failover`
///    (1 MiB without a `config`).
///
/// Patroni also takes the WAL receiver's `latest_end_lsn` as the leader's position when
/// it is ahead of `/status` (and instead of a missing cluster view); [`NodeStatus`] does
/// not carry it, so `/status` alone decides.
#[must_use]
pub fn readiness_status(query: &Query, node: &NodeStatus, cluster: Option<&ClusterState>) -> u16 {
    if node.holds_lease {
        // A leader was bootstrapped or promoted from a running standby: ready by now.
        return 200;
    }
    if node.state != MemberState::Running {
        return 503;
    }
    let Some(pg) = &node.postgres else {
        return 503;
    };
    if pg.replication_state.as_deref() != Some("streaming") {
        return 503;
    }
    let Some(cluster) = cluster else {
        return code(node.failsafe_active);
    };
    let leader_optime = cluster
        .status
        .as_ref()
        .and_then(|s| s.value.optime)
        .unwrap_or(0);
    let position = match &pg.xlog {
        Xlog::Replica {
            received_location,
            replayed_location,
            ..
        } => match query.lag_mode() {
            LagMode::Apply => *replayed_location,
            LagMode::Write => *received_location,
        },
        Xlog::Primary { .. } => 0,
    };
    let default = cluster
        .config
        .as_ref()
        .map_or(1_048_576, |c| c.value.maximum_lag_on_failover());
    let max_lag = query.max_lag().map_or(i128::from(default), i128::from);
    // Signed, as in Python: a replica ahead of `/status` has a negative lag.
    code(i128::from(leader_optime) - i128::from(position) <= max_lag)
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

/// Patroni's `parse_int(value, 'B')`: C's `strtol` (base 0) or, when that stops at `.`,
/// `e` or `E`, `strtod`; then an optional memory unit. A unit is converted to bytes and
/// rounded to whole units of the next smaller one (`1.0001MB` is 1 MiB), then to whole
/// bytes, both half to even like Python's `round`. `None` for anything else (`08`,
/// `1KB`, `1PB`, `10 ms`, a value outside `i64`).
fn parse_bytes(value: &str) -> Option<i64> {
    let value = value.trim();
    let integer = strtol(value);
    let rest = integer.map_or(value, |(_, rest)| rest);
    let (number, unit) = if rest.starts_with(['.', 'e', 'E']) {
        strtod(value)?
    } else {
        let (number, rest) = integer?;
        if rest.trim().is_empty() {
            // Python's ints are exact; no detour through a float.
            return Some(number);
        }
        (number as f64, rest)
    };
    let unit = unit.trim();
    if unit.is_empty() {
        return Some(number.round_ties_even() as i64);
    }
    let index = MEMORY_UNITS.iter().position(|(name, _)| *name == unit)?;
    let mut bytes = number * MEMORY_UNITS[index].1;
    if let Some((_, step)) = MEMORY_UNITS.get(index + 1) {
        bytes = (bytes / step).round_ties_even() * step;
    }
    let bytes = bytes.round_ties_even();
    // `as` would saturate; Python would keep the huge number, so call it unreadable.
    (bytes.abs() < 9.2e18).then_some(bytes as i64)
}

/// Patroni's memory units from the largest down, with their size in bytes.
const MEMORY_UNITS: [(&str, f64); 5] = [
    ("TB", 1_099_511_627_776.0),
    ("GB", 1_073_741_824.0),
    ("MB", 1_048_576.0),
    ("kB", 1024.0),
    ("B", 1.0),
];

/// `patroni.utils.strtol`: a signed `0x` hex, `0` octal or decimal integer at the start
/// of `text`, and the rest.
fn strtol(text: &str) -> Option<(i64, &str)> {
    let sign = usize::from(text.starts_with(['+', '-']));
    let body = &text[sign..];
    let count = |s: &str, f: fn(&u8) -> bool| s.bytes().take_while(f).count();
    let (start, len, radix) = if let Some(hex) = body
        .strip_prefix("0x")
        .filter(|hex| hex.starts_with(|c: char| c.is_ascii_hexdigit()))
    {
        (sign + 2, count(hex, u8::is_ascii_hexdigit), 16)
    } else if let Some(octal) = body.strip_prefix('0') {
        (sign, 1 + count(octal, |b| (b'0'..=b'7').contains(b)), 8)
    } else if body.starts_with(|c: char| c.is_ascii_digit()) {
        (sign, count(body, u8::is_ascii_digit), 10)
    } else {
        return None;
    };
    let magnitude = i64::from_str_radix(&text[start..start + len], radix).ok()?;
    let number = if text.starts_with('-') {
        -magnitude
    } else {
        magnitude
    };
    Some((number, &text[start + len..]))
}

/// `patroni.utils.strtod`: `^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?` at the start of
/// `text`, and the rest.
fn strtod(text: &str) -> Option<(f64, &str)> {
    let bytes = text.as_bytes();
    let digits = |from: usize| {
        bytes
            .get(from..)
            .map_or(0, |b| b.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let sign = usize::from(text.starts_with(['+', '-']));
    let integer = digits(sign);
    let fraction = if bytes.get(sign + integer) == Some(&b'.') {
        digits(sign + integer + 1)
    } else {
        0
    };
    let mut end = match (integer, fraction) {
        (_, 1..) => sign + integer + 1 + fraction,
        (1.., 0) => sign + integer,
        (0, 0) => return None,
    };
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let exponent_sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        let exponent = digits(end + 1 + exponent_sign);
        if exponent > 0 {
            end += 1 + exponent_sign + exponent;
        }
    }
    Some((text[..end].parse().ok()?, &text[end..]))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expectation is what Patroni 4.1.5's `parse_int(value, 'B')` returned.
    #[test]
    fn lag_limits_read_like_patronis_parse_int() {
        for (text, expected) in [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("-1", Some(-1)),
            ("+5", Some(5)),
            ("16MB", Some(16 << 20)),
            ("1kB", Some(1024)),
            ("1 MB", Some(1 << 20)),
            ("  2kB ", Some(2048)),
            ("1B", Some(1)),
            ("1TB", Some(1 << 40)),
            ("-1MB", Some(-(1 << 20))),
            ("0x10", Some(16)),
            ("0x10kB", Some(16_384)),
            ("010", Some(8)),
            ("1.5MB", Some(1_572_864)),
            // Python's round: half to even.
            ("1.5", Some(2)),
            ("2.5", Some(2)),
            ("0.5", Some(0)),
            (".5", Some(0)),
            ("1e3", Some(1000)),
            ("1E3", Some(1000)),
            ("1e3kB", Some(1_024_000)),
            // Rounded to whole units of the next smaller unit first.
            ("1.0001MB", Some(1 << 20)),
            ("1.0001kB", Some(1024)),
            ("9223372036854775807", Some(i64::MAX)),
            ("08", None),
            ("0X10", None),
            ("0x", None),
            ("1.", None),
            ("1.MB", None),
            ("e5", None),
            ("abc", None),
            ("1KB", None),
            ("1mb", None),
            ("1PB", None),
            ("10 ms", None),
            ("9223372036854775808", None),
        ] {
            assert_eq!(parse_bytes(text), expected, "{text:?}");
        }
    }

    #[test]
    fn readiness_mode_is_write_only_when_asked_exactly() {
        for (query, mode) in [
            ("", LagMode::Apply),
            ("mode=apply", LagMode::Apply),
            ("mode=write", LagMode::Write),
            ("mode=", LagMode::Apply),
            ("mode=WRITE", LagMode::Apply),
            ("mode=flush", LagMode::Apply),
            ("mode=write&mode=apply", LagMode::Write),
        ] {
            assert_eq!(Query::parse(query).lag_mode(), mode, "{query:?}");
        }
    }
}
