//! The persistent keys of a scope: `initialize`, `config`, `failover`, `sync`, `history`,
//! `status` (and legacy `optime/leader`), `failsafe`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::json;
use super::lenient::{
    decode, kind, non_negative_int, parse_bool, parse_int, parse_json, py_int, py_strip, py_truthy,
};

/// `initialize`: whether, and as which database, the cluster was bootstrapped.
///
/// **Writer:** the member that wins the bootstrap race creates it as `""` (atomic
/// create-if-absent), then overwrites it with the `Database system identifier` of the
/// cluster it created. A failed bootstrap deletes it. The key being *absent* means "not
/// initialized" and is `None` in [`ClusterState`](super::ClusterState), not a variant.
///
/// **Reading:** `""` is [`Initialize::Bootstrapping`]; at least ten ASCII digits is a
/// [`Initialize::SystemId`] (Patroni's `len >= 10 and isdigit()`); anything else,
/// including invalid UTF-8 (decoded lossily), is [`Initialize::Invalid`], with a warning.
/// Patroni ignores an invalid value when checking for a system-id mismatch, and its leader
/// overwrites it with the real identifier.
///
/// **Writing:** the value is a plain string, not JSON: [`Initialize::to_value_string`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Initialize {
    /// `""`: a member is bootstrapping.
    Bootstrapping,
    /// The database system identifier, e.g. `7268616322854375442`.
    SystemId(String),
    /// Something else, as written.
    Invalid(String),
}

impl Initialize {
    /// Parses an `initialize` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            tracing::warn!(
                key = "initialize",
                "value is not valid UTF-8; reading it as invalid"
            );
        }
        if text.is_empty() {
            Self::Bootstrapping
        } else if text.len() >= 10 && text.bytes().all(|b| b.is_ascii_digit()) {
            Self::SystemId(text.into_owned())
        } else {
            tracing::warn!(key = "initialize", value = %text, "value is not a system identifier");
            Self::Invalid(text.into_owned())
        }
    }

    /// The stored value, a plain string: `""`, the system identifier, or the invalid
    /// text as read.
    #[must_use]
    pub fn to_value_string(&self) -> String {
        match self {
            Self::Bootstrapping => String::new(),
            Self::SystemId(text) | Self::Invalid(text) => text.clone(),
        }
    }

    /// The system identifier, if the cluster is initialized with a valid one.
    #[must_use]
    pub fn system_id(&self) -> Option<&str> {
        match self {
            Self::SystemId(id) => Some(id),
            Self::Bootstrapping | Self::Invalid(_) => None,
        }
    }
}

/// `config`: the dynamic configuration, shared by every member.
///
/// **Writer:** the bootstrapping member (from `bootstrap.dcs`), then `PATCH`/`PUT
/// /config` and `patronictl edit-config`, with compare-and-set on the key's version.
/// Example:
///
/// ```json
/// {"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,
///  "postgresql":{"use_pg_rewind":true,"use_slots":true,"parameters":{"max_connections":100}},
///  "synchronous_mode":false,"failsafe_mode":false,"pause":true}
/// ```
///
/// **Reading:** a JSON object is kept whole in `data` (`valid = true`). Anything else
/// (invalid UTF-8 or JSON, a non-object) reads as empty `data` with `valid = false`, like
/// Patroni's `modify_version = 0`: such a config must not replace the last valid one (a
/// wiped or corrupted key should not reset a running cluster's settings).
///
/// The accessors read settings with Patroni's defaults and lenient parsing. Patroni
/// rejects a whole new config whose `ttl`, `loop_wait` or `retry_timeout` is not an
/// integer and keeps the previous one; a single value cannot do that, so such a setting
/// reads as its default (with a warning from [`ClusterConfig::parse`]).
///
/// **Writing:** [`ClusterConfig::to_json`], compact, keys in the order they were read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterConfig {
    /// The JSON object; empty when the stored value was not an object.
    pub data: Map<String, Value>,
    /// Whether the stored value was a JSON object.
    pub valid: bool,
}

/// `ttl`, `loop_wait`, `retry_timeout` after Patroni 4.x's validation.
struct Timeouts {
    ttl: u64,
    loop_wait: u64,
    retry_timeout: u64,
}

impl ClusterConfig {
    /// Parses a `config` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        match parse_json("config", raw) {
            Some(Value::Object(data)) => {
                let config = Self { data, valid: true };
                config.warn_about_garbage();
                config
            }
            Some(other) => {
                tracing::warn!(
                    key = "config",
                    "value is {}, not an object; reading it as invalid",
                    kind(&other)
                );
                Self::default()
            }
            None => Self::default(),
        }
    }

    fn warn_about_garbage(&self) {
        for name in ["ttl", "loop_wait", "retry_timeout"] {
            if let Some(value) = self.data.get(name).filter(|v| py_int(v).is_none()) {
                tracing::warn!(
                    key = "config",
                    setting = name,
                    %value,
                    "not an integer; using the default"
                );
            }
        }
        for name in ["maximum_lag_on_failover", "synchronous_node_count"] {
            if let Some(value) = self.data.get(name).filter(|v| parse_int(v).is_none()) {
                tracing::warn!(
                    key = "config",
                    setting = name,
                    %value,
                    "not an integer; using the default"
                );
            }
        }
    }

    /// Compact JSON of `data`, keys in their order.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        json::write_map(&mut out, &self.data);
        out
    }

    /// An integer setting read with Python's `int()`, as Patroni's config validation
    /// does; `default` when absent or not an integer, `min` when smaller.
    fn timeout(&self, name: &str, default: u64, min: u64) -> u64 {
        let value = match self.data.get(name) {
            None => default,
            // Negative values are raised to the minimum, as Patroni does.
            Some(value) => py_int(value).map_or(default, |v| u64::try_from(v).unwrap_or(0)),
        };
        value.max(min)
    }

    /// Patroni 4.x's `_validate_and_adjust_timeouts`, except for the `ttl` minimum:
    /// minimums `ttl >= 7` (Patroni 4.x raises `ttl` to 20, 3.x keeps any value; 7 is
    /// the smallest that fits the rule below, so a short `ttl` such as 10 is honoured),
    /// `loop_wait >= 1`, `retry_timeout >= 3`, then the safety rule
    /// `loop_wait + 2 * retry_timeout <= ttl` is restored by shortening `loop_wait`, or,
    /// if that is not enough, `loop_wait = 1` and `retry_timeout = (ttl - 1) / 2`.
    fn timeouts(&self) -> Timeouts {
        /// `loop_wait` 1 + 2 * `retry_timeout` 3: the smallest `ttl` the rule allows.
        const MIN_TTL: u64 = 7;
        let ttl = self.timeout("ttl", 30, MIN_TTL);
        let mut loop_wait = self.timeout("loop_wait", 10, 1);
        let mut retry_timeout = self.timeout("retry_timeout", 10, 3);
        if retry_timeout.saturating_mul(2).saturating_add(1) > ttl {
            loop_wait = 1;
            retry_timeout = (ttl - 1) / 2;
        } else if retry_timeout.saturating_mul(2).saturating_add(loop_wait) > ttl {
            loop_wait = ttl - 2 * retry_timeout;
        }
        Timeouts {
            ttl,
            loop_wait,
            retry_timeout,
        }
    }

    /// `ttl` in seconds: lifetime of the leader key and member keys. Default 30, at least
    /// 7 (see [`ClusterConfig::loop_wait`] for the rule tying the three timeouts).
    #[must_use]
    pub fn ttl(&self) -> u64 {
        self.timeouts().ttl
    }

    /// `loop_wait` in seconds: the HA loop period. Default 10, at least 1, and shortened
    /// so that `loop_wait + 2 * retry_timeout <= ttl`: the leader then notices a failed
    /// renewal before its key can expire.
    #[must_use]
    pub fn loop_wait(&self) -> u64 {
        self.timeouts().loop_wait
    }

    /// `retry_timeout` in seconds: the deadline of one DCS (or Postgres) operation
    /// including retries. Default 10, at least 3, lowered to `(ttl - 1) / 2` when even
    /// `loop_wait = 1` cannot satisfy the rule.
    #[must_use]
    pub fn retry_timeout(&self) -> u64 {
        self.timeouts().retry_timeout
    }

    /// `maximum_lag_on_failover` in bytes: a replica further behind the last known leader
    /// position may not take over. Default 1 MiB (1048576), read with Patroni's
    /// `parse_int`; a negative value reads as 0.
    #[must_use]
    pub fn maximum_lag_on_failover(&self) -> u64 {
        let lag = self.data.get("maximum_lag_on_failover").and_then(parse_int);
        lag.map_or(1_048_576, |lag| u64::try_from(lag).unwrap_or(0))
    }

    fn check_mode(&self, name: &str) -> bool {
        self.data.get(name).and_then(parse_bool) == Some(true)
    }

    /// `pause`: maintenance mode, the HA loop neither promotes nor demotes. Lenient
    /// booleans (`on`, `true`, `yes`, `1` and their negations, case-insensitive).
    #[must_use]
    pub fn pause(&self) -> bool {
        self.check_mode("pause")
    }

    /// `failsafe_mode`: a primary that loses the DCS keeps running while every member
    /// in `failsafe` confirms it over the REST API.
    #[must_use]
    pub fn failsafe_mode(&self) -> bool {
        self.check_mode("failsafe_mode")
    }

    /// Whether synchronous replication is on, as Patroni's `is_synchronous_mode`:
    /// `synchronous_mode` is a true boolean or `quorum`, and this is not a standby
    /// cluster.
    #[must_use]
    pub fn synchronous_mode(&self) -> bool {
        (self.check_mode("synchronous_mode") || self.quorum_commit_mode())
            && !self.is_standby_cluster()
    }

    /// `synchronous_mode: quorum` (4.x quorum commit), compared case-insensitively.
    #[must_use]
    pub fn quorum_commit_mode(&self) -> bool {
        self.data
            .get("synchronous_mode")
            .and_then(Value::as_str)
            .is_some_and(|mode| mode.to_lowercase() == "quorum")
    }

    /// `synchronous_mode_strict`: never run without a synchronous standby.
    #[must_use]
    pub fn synchronous_mode_strict(&self) -> bool {
        self.check_mode("synchronous_mode_strict")
    }

    /// `synchronous_node_count`: default 1, at least 1 in strict mode, never negative.
    #[must_use]
    pub fn synchronous_node_count(&self) -> u64 {
        let count = self
            .data
            .get("synchronous_node_count")
            .and_then(parse_int)
            .unwrap_or(1);
        let min = i64::from(self.synchronous_mode_strict());
        u64::try_from(count.max(min)).unwrap_or(0)
    }

    /// `check_timeline`: a candidate on an older timeline than the cluster may not win.
    #[must_use]
    pub fn check_timeline(&self) -> bool {
        self.check_mode("check_timeline")
    }

    /// `check_timeline` as written: `None` when absent or not a boolean, so an agent may
    /// choose its own default (ha-agent checks unless told `false`).
    #[must_use]
    pub fn check_timeline_setting(&self) -> Option<bool> {
        self.data.get("check_timeline").and_then(parse_bool)
    }

    /// Whether `standby_cluster` is an object with a truthy `host`, `port` or
    /// `restore_command`: the cluster replicates from a remote primary and its leader is
    /// a `standby_leader`.
    #[must_use]
    pub fn is_standby_cluster(&self) -> bool {
        self.data
            .get("standby_cluster")
            .and_then(Value::as_object)
            .is_some_and(|standby| {
                ["host", "port", "restore_command"]
                    .iter()
                    .any(|name| standby.get(*name).is_some_and(py_truthy))
            })
    }
}

/// `failover`: a requested switchover or manual failover.
///
/// **Writer:** `POST /switchover`, `POST /failover`, `patronictl switchover/failover`
/// (compare-and-set); the leader clears it by writing `{}` (or deleting it) when done.
/// Example: `{"leader":"postgresql0","member":"postgresql1",
/// "scheduled_at":"2024-09-24T12:00:00+00:00"}`; any subset. Note the candidate's key is
/// `member` (the REST API and CLI call it `candidate`). A `leader` makes it a
/// switchover away from that member.
///
/// **Reading:** a JSON object's `leader`, `member` and `scheduled_at` strings; empty
/// strings and other types read as absent. An empty value and a non-object JSON value
/// read as empty. Text that is not JSON at all is the legacy form `leader:candidate`
/// (split on `:`, each part trimmed), as Patroni reads it; so almost any garbage names a
/// leader. `scheduled_at` is kept as written: Patroni parses it with `dateutil` (and its
/// cluster read fails on an unparsable one), the HA logic must parse it itself.
///
/// **Writing:** [`Failover::to_json`] writes only the present fields, `{}` when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failover {
    /// `leader`: the member to switch away from.
    pub leader: Option<String>,
    /// `member`: the candidate to promote.
    pub candidate: Option<String>,
    /// `scheduled_at`, ISO-8601 with time zone, as written.
    pub scheduled_at: Option<String>,
}

impl Failover {
    /// Parses a `failover` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let Some(text) = decode("failover", raw) else {
            return Self::default();
        };
        if text.is_empty() {
            return Self::default();
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => {
                let field = |name| non_empty_string("failover", &fields, name);
                Self {
                    leader: field("leader"),
                    candidate: field("member"),
                    scheduled_at: field("scheduled_at"),
                }
            }
            Ok(other) => {
                tracing::warn!(
                    key = "failover",
                    "value is {}, not an object; reading it as empty",
                    kind(&other)
                );
                Self::default()
            }
            Err(_) => {
                // Patroni's legacy `leader:candidate` text form.
                let mut parts = text.split(':').map(py_strip);
                let part = |p: Option<&str>| p.filter(|p| !p.is_empty()).map(str::to_owned);
                Self {
                    leader: part(parts.next()),
                    candidate: part(parts.next()),
                    scheduled_at: None,
                }
            }
        }
    }

    /// Compact JSON as Patroni's `manual_failover` writes it: `leader`, `member`,
    /// `scheduled_at`, each only when non-empty.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut object = json::Object::new(&mut out);
        for (name, value) in [
            ("leader", &self.leader),
            ("member", &self.candidate),
            ("scheduled_at", &self.scheduled_at),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                object.str_field(name, value);
            }
        }
        object.end();
        out
    }

    /// Whether neither a leader nor a candidate is named: no failover is requested
    /// (Patroni's `len(failover) == 0`; a lone `scheduled_at` requests nothing).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        let named = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        !named(&self.leader) && !named(&self.candidate)
    }
}

/// `sync`: who the synchronous standbys are, for synchronous (and quorum) replication.
///
/// **Writer:** the leader, with compare-and-set, whenever it changes
/// `synchronous_standby_names`; deleted (`ZooKeeper`: `{}`) when sync mode is turned off.
/// Example (4.x): `{"leader":"postgresql0","quorum":0,"sync_standby":"postgresql1,postgresql2"}`;
/// `sync_standby` may be `null`; 3.x has no `quorum`.
///
/// **Why it matters:** in synchronous mode only the leader named here or a listed standby
/// may be promoted, since only they are known to have every acknowledged commit.
///
/// **Reading:** `leader` and `sync_standby` must be strings (others read as absent, with a
/// warning); `sync_standby` is split on commas, each name trimmed, empty names dropped.
/// `quorum` is read only when `leader` is set and `quorum` is truthy, with Python's
/// `int()`; if that fails Patroni reads the *whole key* as empty, and so do we. Invalid
/// JSON and non-objects read as empty.
///
/// **Writing:** [`SyncState::to_json`]: `leader` (or `null`), `quorum` (always),
/// `sync_standby` sorted and comma-joined (or `null` when there are none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// `leader`: the primary that manages this key.
    pub leader: Option<String>,
    /// `sync_standby`, split on commas.
    pub sync_standby: Vec<String>,
    /// `quorum`: in quorum mode, a standby racing for the leader key must see at least this
    /// many other nodes of `leader` + `sync_standby`. 0 unless `leader` is set.
    pub quorum: u64,
}

impl SyncState {
    /// Parses a `sync` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let fields = match parse_json("sync", raw) {
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                tracing::warn!(
                    key = "sync",
                    "value is {}, not an object; reading it as empty",
                    kind(&other)
                );
                return Self::default();
            }
            None => return Self::default(),
        };
        let leader = non_empty_string("sync", &fields, "leader");
        let quorum = match fields.get("quorum") {
            Some(quorum) if leader.is_some() && py_truthy(quorum) => {
                let Some(n) = py_int(quorum) else {
                    tracing::warn!(
                        key = "sync",
                        %quorum,
                        "quorum is not an integer; reading the sync state as empty"
                    );
                    return Self::default();
                };
                u64::try_from(n).unwrap_or_else(|_| {
                    tracing::warn!(
                        key = "sync",
                        quorum = n,
                        "quorum is negative; reading it as 0"
                    );
                    0
                })
            }
            _ => 0,
        };
        let sync_standby = match fields.get("sync_standby") {
            Some(Value::String(names)) => names
                .split(',')
                .map(py_strip)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                tracing::warn!(
                    key = "sync",
                    "sync_standby is {}, not a string; ignoring it",
                    kind(other)
                );
                Vec::new()
            }
        };
        Self {
            leader,
            sync_standby,
            quorum,
        }
    }

    /// Compact JSON as Patroni 4.x's `sync_state` builds it.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut object = json::Object::new(&mut out);
        match &self.leader {
            Some(leader) => object.str_field("leader", leader),
            None => object.null_field("leader"),
        }
        object.u64_field("quorum", self.quorum);
        if self.sync_standby.is_empty() {
            object.null_field("sync_standby");
        } else {
            let mut names: Vec<&str> = self.sync_standby.iter().map(String::as_str).collect();
            names.sort_unstable();
            object.str_field("sync_standby", &names.join(","));
        }
        object.end();
        out
    }

    /// Whether the key names no leader: synchronous replication is not (yet) managed, and
    /// nobody is known to be synchronous.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.leader.as_deref().is_none_or(str::is_empty)
    }

    /// The synchronous standbys (Patroni's `voters`); none when [`SyncState::is_empty`].
    #[must_use]
    pub fn voters(&self) -> &[String] {
        if self.is_empty() {
            &[]
        } else {
            &self.sync_standby
        }
    }

    /// The leader followed by the voters (4.x `members`); empty when
    /// [`SyncState::is_empty`].
    #[must_use]
    pub fn members(&self) -> Vec<&str> {
        self.leader
            .as_deref()
            .filter(|leader| !leader.is_empty())
            .into_iter()
            .chain(self.voters().iter().map(String::as_str))
            .collect()
    }

    /// Whether `name` is one of the synchronous standbys, compared case-insensitively
    /// as Postgres compares `synchronous_standby_names` (Patroni 4.x's
    /// `matches(name)`; 3.x also matched the leader, see [`SyncState::leader_matches`]).
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        !name.is_empty()
            && self
                .voters()
                .iter()
                .any(|voter| voter.to_lowercase() == name)
    }

    /// Whether `name` is the leader recorded here, case-insensitively.
    #[must_use]
    pub fn leader_matches(&self, name: &str) -> bool {
        !name.is_empty()
            && !self.is_empty()
            && self
                .leader
                .as_deref()
                .is_some_and(|leader| leader.to_lowercase() == name.to_lowercase())
    }
}

/// `history`: the cluster's timeline switches, from Postgres's `NNNNNNNN.history`.
///
/// **Writer:** the primary, whenever its timeline changes (trimmed to
/// `max_timelines_history`); `[]` on timeline 1. Example:
/// `[[1,25623960,"no recovery target specified","2019-09-23T16:57:57+02:00","postgresql1"]]`
/// (parent timeline, switch LSN, reason, promotion time, promoted member).
///
/// **Reading:** a JSON array of lines. A line that is not an array of at least
/// timeline, LSN (integers or decimal strings) and reason (a string) is skipped with a
/// warning; a non-string timestamp or leader reads as absent. Anything but an array reads
/// as no lines.
///
/// **Writing:** [`TimelineHistory::to_json`], each line as long as its last present field
/// (a `new_leader` without a timestamp writes `null` for the timestamp).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimelineHistory {
    /// The lines that parsed.
    pub lines: Vec<HistoryLine>,
}

/// One line of `history`: the switch from `timeline` to the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryLine {
    /// Parent timeline: the one that ended here.
    pub timeline: u64,
    /// Switch LSN in bytes: where `timeline` ended.
    pub lsn: u64,
    /// Reason, from the history file.
    pub reason: String,
    /// Promotion time (the history file's modification time), ISO-8601.
    pub timestamp: Option<String>,
    /// The member that promoted.
    pub new_leader: Option<String>,
}

impl TimelineHistory {
    /// Parses a `history` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let lines = match parse_json("history", raw) {
            Some(Value::Array(lines)) => lines,
            Some(other) => {
                tracing::warn!(
                    key = "history",
                    "value is {}, not an array; reading no lines",
                    kind(&other)
                );
                return Self::default();
            }
            None => return Self::default(),
        };
        let lines = lines
            .iter()
            .enumerate()
            .filter_map(|(index, line)| {
                let parsed = HistoryLine::from_json(line);
                if parsed.is_none() {
                    tracing::warn!(
                        key = "history",
                        index,
                        %line,
                        "malformed history line; skipping it"
                    );
                }
                parsed
            })
            .collect();
        Self { lines }
    }

    /// Compact JSON, as Patroni writes it.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            line.write_json(&mut out);
        }
        out.push(']');
        out
    }

    /// The timeline the cluster is on according to this history: the last switch's
    /// parent timeline + 1, or 1 when there are no lines (Patroni's `Cluster.timeline`,
    /// which reads 0 instead of 1 when the value is not exactly `[]`; either disables
    /// its timeline check).
    #[must_use]
    pub fn next_timeline(&self) -> u64 {
        self.lines
            .last()
            .map_or(1, |line| line.timeline.saturating_add(1))
    }
}

impl HistoryLine {
    fn from_json(line: &Value) -> Option<Self> {
        let items = line.as_array()?;
        let optional = |index: usize| match items.get(index) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => {
                tracing::warn!(
                    key = "history",
                    %other,
                    "history line field is not a string; ignoring it"
                );
                None
            }
        };
        Some(Self {
            timeline: non_negative_int(items.first()?)?,
            lsn: non_negative_int(items.get(1)?)?,
            reason: items.get(2)?.as_str()?.to_owned(),
            timestamp: optional(3),
            new_leader: optional(4),
        })
    }

    fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        write!(out, "[{},{},", self.timeline, self.lsn).expect("writing to a String cannot fail");
        json::write_str(out, &self.reason);
        match (&self.timestamp, &self.new_leader) {
            (None, None) => {}
            (Some(timestamp), None) => {
                out.push(',');
                json::write_str(out, timestamp);
            }
            (timestamp, Some(leader)) => {
                out.push(',');
                match timestamp {
                    Some(timestamp) => json::write_str(out, timestamp),
                    None => out.push_str("null"),
                }
                out.push(',');
                json::write_str(out, leader);
            }
        }
        out.push(']');
    }
}

/// `status` (and the legacy `optime/leader`): where the leader's WAL and slots are.
///
/// **Writer:** the leader, every cycle it renews the lock (only when changed), and once
/// more when it releases the lock on shutdown (with the shutdown checkpoint's LSN, so
/// replicas know where the old primary stopped). Example (4.x):
/// `{"optime":67420024,"slots":{"postgresql1":67420024,"permanent_logical":67419000},"retain_slots":["postgresql0","postgresql1"]}`.
/// Before Patroni 2.1.0 only `optime/leader` existed, a plain integer string; it is still
/// written when some member runs such a version, and read when `status` is absent.
///
/// **Why it matters:** `optime` is the position that `maximum_lag_on_failover` is measured
/// against in the leader race; replicas advance their copies of permanent slots to
/// `slots`; `retain_slots` keeps member slots alive for `member_slots_ttl`.
///
/// **Reading:** a plain JSON integer is the legacy optime. In an object, `optime` is read
/// with Python's `int()` (absent or garbage: `None`); `slots` is an object of slot name →
/// LSN or a JSON string holding one (Kubernetes stores it so); an LSN that is not an
/// integer is dropped (Patroni reads it as 0, which it treats as "no position");
/// `retain_slots` is an array of names or a JSON string holding one, non-strings dropped.
/// Anything else reads as empty, with a warning.
///
/// **Writing:** [`Status::to_json`] writes `optime`, `slots`, `retain_slots` in that
/// order, omitting an absent `optime` and empty `slots`/`retain_slots`, as Patroni's
/// `write_status` drops `None` values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    /// `optime`: the leader's last known WAL position in bytes.
    pub optime: Option<u64>,
    /// `slots`: slot name → LSN on the primary.
    pub slots: BTreeMap<String, u64>,
    /// `retain_slots`: member slot names to keep although the member key is gone.
    pub retain_slots: Vec<String>,
}

impl Status {
    /// Parses a `status` or legacy `optime/leader` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        match parse_json("status", raw) {
            Some(Value::Number(optime)) => {
                let optime = optime.as_u64();
                if optime.is_none() {
                    tracing::warn!(
                        key = "status",
                        "legacy optime is not a non-negative integer"
                    );
                }
                Self {
                    optime,
                    ..Self::default()
                }
            }
            Some(Value::Object(fields)) => Self::from_fields(&fields),
            Some(other) => {
                tracing::warn!(
                    key = "status",
                    "value is {}, not an object; reading it as empty",
                    kind(&other)
                );
                Self::default()
            }
            None => Self::default(),
        }
    }

    fn from_fields(fields: &Map<String, Value>) -> Self {
        let optime = match fields.get("optime") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let optime = position(value, py_int);
                if optime.is_none() {
                    tracing::warn!(
                        key = "status",
                        %value,
                        "optime is not a non-negative integer; ignoring it"
                    );
                }
                optime
            }
        };
        let mut slots = BTreeMap::new();
        match nested_json(fields.get("slots"), "slots") {
            Some(Value::Object(entries)) => {
                for (name, lsn) in entries {
                    match position(&lsn, parse_int) {
                        Some(lsn) => {
                            slots.insert(name, lsn);
                        }
                        None => {
                            tracing::warn!(
                                key = "status",
                                slot = %name,
                                %lsn,
                                "slot LSN is not an integer; ignoring it"
                            );
                        }
                    }
                }
            }
            Some(other) => tracing::warn!(
                key = "status",
                "slots is {}, not an object; ignoring it",
                kind(&other)
            ),
            None => {}
        }
        let mut retain_slots = Vec::new();
        match nested_json(fields.get("retain_slots"), "retain_slots") {
            Some(Value::Array(names)) => {
                for name in names {
                    match name {
                        Value::String(name) => retain_slots.push(name),
                        other => {
                            tracing::warn!(
                                key = "status",
                                %other,
                                "retain_slots entry is not a string; ignoring it"
                            );
                        }
                    }
                }
            }
            Some(other) => tracing::warn!(
                key = "status",
                "retain_slots is {}, not an array; ignoring it",
                kind(&other)
            ),
            None => {}
        }
        Self {
            optime,
            slots,
            retain_slots,
        }
    }

    /// Compact JSON as Patroni's `write_status` writes it.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut object = json::Object::new(&mut out);
        if let Some(optime) = self.optime {
            object.u64_field("optime", optime);
        }
        if !self.slots.is_empty() {
            object.raw_field("slots", |out| {
                let mut slots = json::Object::new(out);
                for (name, lsn) in &self.slots {
                    slots.u64_field(name, *lsn);
                }
                slots.end();
            });
        }
        if !self.retain_slots.is_empty() {
            let names = self
                .retain_slots
                .iter()
                .map(|name| Value::from(name.as_str()))
                .collect();
            object.field("retain_slots", &Value::Array(names));
        }
        object.end();
        out
    }
}

/// `failsafe`: the members allowed to vouch for a primary that lost the DCS.
///
/// **Writer:** the leader, when `failsafe_mode` is on and the topology changed: every
/// member with an `api_url`, plus itself. Example:
/// `{"postgresql0":"http://10.0.0.1:8008/patroni","postgresql1":"http://10.0.0.2:8008/patroni"}`.
///
/// **Why it matters:** with the DCS down, a primary keeps running only while every
/// member listed here answers its `POST /failsafe`; a member not listed may not take
/// over.
///
/// **Reading:** a JSON object; entries whose value is not a string are dropped, anything
/// else reads as empty, with a warning. **Writing:** [`Failsafe::to_json`], names sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failsafe {
    /// Member name → REST API URL.
    pub members: BTreeMap<String, String>,
}

impl Failsafe {
    /// Parses a `failsafe` value; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let fields = match parse_json("failsafe", raw) {
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                tracing::warn!(
                    key = "failsafe",
                    "value is {}, not an object; reading it as empty",
                    kind(&other)
                );
                return Self::default();
            }
            None => return Self::default(),
        };
        let members = fields
            .into_iter()
            .filter_map(|(name, url)| match url {
                Value::String(url) => Some((name, url)),
                other => {
                    tracing::warn!(
                        key = "failsafe",
                        member = %name,
                        "api url is {}, not a string; ignoring it",
                        kind(&other),
                    );
                    None
                }
            })
            .collect();
        Self { members }
    }

    /// Compact JSON, names sorted.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut object = json::Object::new(&mut out);
        for (name, url) in &self.members {
            object.str_field(name, url);
        }
        object.end();
        out
    }
}

/// A string field that must be non-empty: `null`, absent and `""` quietly read as absent,
/// other types with a warning.
fn non_empty_string(key: &str, fields: &Map<String, Value>, name: &str) -> Option<String> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_) | Value::Null) | None => None,
        Some(other) => {
            tracing::warn!(
                key,
                field = name,
                "field is {}, not a string; ignoring it",
                kind(other)
            );
            None
        }
    }
}

/// A WAL position read with one of Patroni's integer readers; a JSON integer is taken
/// whole first, since a position may exceed `i64`.
fn position(value: &Value, read: fn(&Value) -> Option<i64>) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| read(value).and_then(|n| u64::try_from(n).ok()))
}

/// A field that may hold its JSON as a string (Kubernetes annotations do).
fn nested_json(value: Option<&Value>, name: &str) -> Option<Value> {
    match value? {
        Value::Null => None,
        Value::String(text) => match serde_json::from_str(text) {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::warn!(
                    key = "status",
                    field = name,
                    error = %err,
                    "string field is not valid JSON; ignoring it"
                );
                None
            }
        },
        other => Some(other.clone()),
    }
}
