//! `members/<name>`: what each member publishes about itself.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::json;
use super::lenient::{decode, kind, non_negative_int, parse_bool, parse_int, py_int, py_truthy};

/// How warnings name the key; the full key is on the span `ClusterState::from_entries`
/// opens around each entry.
const KEY: &str = "members/<name>";

/// The fields with a typed home in [`MemberData`], in the order Patroni's
/// `Ha.touch_member` writes them. An `extra` entry with one of these names is never
/// written: the typed field is the truth.
const KNOWN_FIELDS: [&str; 11] = [
    "conn_url",
    "api_url",
    "state",
    "role",
    "version",
    "tags",
    "xlog_location",
    "replay_lsn",
    "receive_lsn",
    "replication_state",
    "timeline",
];

/// The JSON value of `members/<name>`: what one member publishes about itself.
///
/// **Writer:** each member, every HA cycle (`Ha.touch_member`), bound to its own TTL,
/// lease or session; it disappears when the member stops renewing. On Kubernetes the same
/// JSON is the pod annotation `status`.
///
/// **Readers** need exactly these fields: `patronictl list`, haproxy/confd templates and
/// every other member (the leader race compares `xlog_location`, slots are created per
/// member name, `version` selects legacy code paths). Example (4.x):
///
/// ```json
/// {"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni",
///  "state":"running","role":"replica","version":"4.1.4","tags":{"clonefrom":true},
///  "xlog_location":67419744,"replay_lsn":67419744,"receive_lsn":67419744,
///  "replication_state":"streaming","timeline":1}
/// ```
///
/// **Reading** ([`MemberData::parse`]) is lenient and total, like Patroni's
/// `Member.from_node`: invalid UTF-8, invalid JSON or a non-object read as the empty
/// value (`state` unknown, role uninitialized, no URLs), with a warning. A value starting
/// with `postgres` is the legacy Governor form
/// `postgres://user:pw@host:port/db?application_name=<api_url>`, split into `conn_url`
/// (without the query) and `api_url`. Known fields of the wrong type read as absent (with
/// a warning); positions and the timeline also accept numeric strings. Unknown fields
/// (`proxy_url`, `pending_restart`, `pending_restart_reason`, `scheduled_restart`,
/// `pause`, `checkpoint_after_promote`, anything newer) are kept in `extra`.
///
/// **Writing** ([`MemberData::to_json`], and the [`Serialize`] impl with the same field
/// order) produces Patroni's field order, then `extra` in key order. Absent options, empty
/// `tags` and an unknown `state` are omitted; `role` is always written, as `primary` for
/// [`Role::Primary`] (never 3.x's `master`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberData {
    /// `postgres://host:port/db`: where to connect to this member's Postgres (no
    /// credentials in 4.x; the Governor form may carry some).
    pub conn_url: Option<String>,
    /// `http://host:port/patroni`: the member's REST API, polled by the leader race.
    pub api_url: Option<String>,
    /// `running`, `stopped`, ... ; [`MemberState::Unknown`] when absent.
    pub state: MemberState,
    /// `primary`, `replica`, ... ; [`Role::Uninitialized`] when absent.
    pub role: Role,
    /// Agent version, dotted ints (`4.1.4`). Patroni nodes branch on it, so an agent must
    /// publish a Patroni-compatible version; see [`MemberData::patroni_version`].
    pub version: Option<String>,
    /// Effective tags (`nofailover`, `failover_priority`, `clonefrom`, `noloadbalance`,
    /// `nosync`, `sync_priority`, `replicatefrom`, `nostream`, custom ones), as written.
    /// Read them through the accessors, which apply Patroni's rules.
    pub tags: Map<String, Value>,
    /// WAL position in bytes: the primary's flush LSN, a replica's
    /// `max(receive, replay)`. Present only while Postgres is running.
    pub xlog_location: Option<u64>,
    /// Replay position in bytes (replicas, 4.1+).
    pub replay_lsn: Option<u64>,
    /// Receive position in bytes (replicas, 4.1+).
    pub receive_lsn: Option<u64>,
    /// `streaming` or `in archive recovery` (replicas).
    pub replication_state: Option<String>,
    /// The member's current timeline.
    pub timeline: Option<u64>,
    /// Every other field, kept as written and written back after the known ones.
    pub extra: Map<String, Value>,
}

impl MemberData {
    /// Parses a `members/<name>` value leniently; never fails, never panics.
    #[must_use]
    pub fn parse(raw: &[u8]) -> Self {
        let Some(text) = decode(KEY, raw) else {
            return Self::default();
        };
        // Patroni tests the prefix before trying JSON, so `postgresql://...` is legacy too.
        if text.starts_with("postgres") {
            let (conn_url, api_url) = split_governor_url(text);
            return Self {
                conn_url: Some(conn_url),
                api_url,
                ..Self::default()
            };
        }
        match serde_json::from_str(text) {
            Ok(Value::Object(fields)) => Self::from_fields(fields),
            Ok(other) => {
                tracing::warn!(
                    key = KEY,
                    "member value is {}, not an object; reading it as empty",
                    kind(&other)
                );
                Self::default()
            }
            Err(err) => {
                tracing::warn!(
                    key = KEY,
                    error = %err,
                    "member value is not valid JSON; reading it as empty"
                );
                Self::default()
            }
        }
    }

    fn from_fields(fields: Map<String, Value>) -> Self {
        let mut data = Self::default();
        for (name, value) in fields {
            match name.as_str() {
                "conn_url" => data.conn_url = string_field(&name, value),
                "api_url" => data.api_url = string_field(&name, value),
                "version" => data.version = string_field(&name, value),
                "replication_state" => data.replication_state = string_field(&name, value),
                "state" => {
                    data.state = string_field(&name, value)
                        .map_or(MemberState::Unknown, |s| MemberState::from(s.as_str()));
                }
                "role" => {
                    data.role = string_field(&name, value)
                        .map_or_else(Role::default, |s| Role::from(s.as_str()));
                }
                "tags" => match value {
                    Value::Object(tags) => data.tags = tags,
                    Value::Null => {}
                    other => tracing::warn!(
                        key = KEY,
                        "member tags are {}, not an object; ignoring them",
                        kind(&other)
                    ),
                },
                "xlog_location" => data.xlog_location = position_field(&name, &value),
                "replay_lsn" => data.replay_lsn = position_field(&name, &value),
                "receive_lsn" => data.receive_lsn = position_field(&name, &value),
                "timeline" => data.timeline = position_field(&name, &value),
                _ => {
                    data.extra.insert(name, value);
                }
            }
        }
        data
    }

    /// Compact JSON as Patroni 4.x writes it (see the type docs for the field order).
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let mut object = json::Object::new(&mut out);
        for (name, value) in self.fields() {
            object.field(name, &value);
        }
        object.end();
        out
    }

    /// The fields to write, in Patroni's order.
    fn fields(&self) -> Vec<(&str, Value)> {
        let mut fields = Vec::with_capacity(KNOWN_FIELDS.len() + self.extra.len());
        let mut string = |name, value: &Option<String>| {
            if let Some(value) = value {
                fields.push((name, Value::from(value.as_str())));
            }
        };
        string("conn_url", &self.conn_url);
        string("api_url", &self.api_url);
        if self.state != MemberState::Unknown {
            fields.push(("state", Value::from(self.state.as_str())));
        }
        fields.push(("role", Value::from(self.role.as_str())));
        if let Some(version) = &self.version {
            fields.push(("version", Value::from(version.as_str())));
        }
        if !self.tags.is_empty() {
            fields.push(("tags", Value::Object(self.tags.clone())));
        }
        for (name, position) in [
            ("xlog_location", self.xlog_location),
            ("replay_lsn", self.replay_lsn),
            ("receive_lsn", self.receive_lsn),
        ] {
            if let Some(position) = position {
                fields.push((name, Value::from(position)));
            }
        }
        if let Some(state) = &self.replication_state {
            fields.push(("replication_state", Value::from(state.as_str())));
        }
        if let Some(timeline) = self.timeline {
            fields.push(("timeline", Value::from(timeline)));
        }
        for (name, value) in &self.extra {
            if !KNOWN_FIELDS.contains(&name.as_str()) {
                fields.push((name.as_str(), value.clone()));
            }
        }
        fields
    }

    /// Whether Postgres is `running` (Patroni's `Member.is_running`).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.state == MemberState::Running
    }

    /// The member's WAL position (`xlog_location`), as Patroni's `Member.lsn`.
    ///
    /// Patroni reads it with `parse_int`, which would also accept `"0x10"` or `"1e3"`; we
    /// accept only integers and decimal strings and read the rest as unknown.
    #[must_use]
    pub fn lsn(&self) -> Option<u64> {
        self.xlog_location
    }

    /// `version` as dotted integers (`"4.1.4"` → `[4, 1, 4]`), `None` when absent or not
    /// of that form. Patroni compares these like tuples: `< [2, 1, 0]` means the member
    /// still reads `optime/leader`, `> [1, 5, 6]` means it publishes
    /// `checkpoint_after_promote`, a leader `< [4, 0, 0]` computes slot positions the old
    /// way.
    #[must_use]
    pub fn patroni_version(&self) -> Option<Vec<u64>> {
        let version = self.version.as_deref().filter(|v| !v.is_empty())?;
        version
            .split('.')
            .map(|part| py_int(&Value::from(part)).and_then(|n| u64::try_from(n).ok()))
            .collect()
    }

    /// Whether this member, being the leader, has finished the checkpoint after its
    /// promotion (Patroni's `Leader.checkpoint_after_promote`): a primary writes
    /// `"checkpoint_after_promote":false` until then. `None` when the member's version is
    /// unknown or not newer than 1.5.6, which never wrote the flag.
    #[must_use]
    pub fn checkpoint_after_promote(&self) -> Option<bool> {
        let newer = self
            .patroni_version()
            .is_some_and(|v| v.as_slice() > [1, 5, 6].as_slice());
        newer.then(|| {
            self.role == Role::Primary && !self.extra.contains_key("checkpoint_after_promote")
        })
    }

    fn tag(&self, name: &str) -> Option<&Value> {
        self.tags.get(name).filter(|v| !v.is_null())
    }

    /// A boolean tag that a priority tag can also switch off (Patroni's `_bool_tag`): the
    /// boolean wins when present (by Python truthiness), else a priority `<= 0` means on.
    fn bool_tag(&self, bool_name: &str, priority_name: &str) -> bool {
        match self.tag(bool_name) {
            Some(value) => py_truthy(value),
            None => self
                .tag(priority_name)
                .and_then(parse_int)
                .is_some_and(|p| p <= 0),
        }
    }

    /// A priority tag that a boolean tag can override (Patroni's `_priority_tag`): 0 when
    /// the boolean is truthy, else the priority, 1 when absent or not an integer.
    fn priority_tag(&self, bool_name: &str, priority_name: &str) -> i64 {
        if self.tag(bool_name).is_some_and(py_truthy) {
            return 0;
        }
        self.tag(priority_name).and_then(parse_int).unwrap_or(1)
    }

    /// Whether this member must never become the leader.
    ///
    /// Patroni's rule: a present `nofailover` tag decides by Python truthiness (so the
    /// string `"false"` means *true*); without it, `failover_priority <= 0` means no
    /// failover.
    #[must_use]
    pub fn nofailover(&self) -> bool {
        self.bool_tag("nofailover", "failover_priority")
    }

    /// The member's priority in the leader race (higher wins among equally healthy
    /// members): 0 when `nofailover` is truthy, else the `failover_priority` tag read
    /// with Patroni's `parse_int`, defaulting to 1.
    #[must_use]
    pub fn failover_priority(&self) -> i64 {
        self.priority_tag("nofailover", "failover_priority")
    }

    /// Whether load balancers should leave this member out (`noloadbalance`, Python
    /// truthiness).
    #[must_use]
    pub fn noloadbalance(&self) -> bool {
        self.tag("noloadbalance").is_some_and(py_truthy)
    }

    /// Whether new replicas may take their base backup from this member: the `clonefrom`
    /// tag is truthy *and* the member publishes a `conn_url`.
    #[must_use]
    pub fn clonefrom(&self) -> bool {
        self.tag("clonefrom").is_some_and(py_truthy)
            && self.conn_url.as_deref().is_some_and(|url| !url.is_empty())
    }

    /// Whether this member must never be a synchronous standby: the `nosync` tag by
    /// truthiness when present, else `sync_priority <= 0` (4.1's rule).
    #[must_use]
    pub fn nosync(&self) -> bool {
        self.bool_tag("nosync", "sync_priority")
    }

    /// Priority to become a synchronous standby: 0 when `nosync` is truthy, else the
    /// `sync_priority` tag, defaulting to 1 (4.1).
    #[must_use]
    pub fn sync_priority(&self) -> i64 {
        self.priority_tag("nosync", "sync_priority")
    }

    /// The member this one replicates from (cascading), from the `replicatefrom` tag.
    #[must_use]
    pub fn replicatefrom(&self) -> Option<&str> {
        self.tag("replicatefrom").and_then(Value::as_str)
    }

    /// Whether this member does not stream WAL (`nostream`, Patroni's lenient booleans):
    /// no replication slot is kept for it anywhere.
    #[must_use]
    pub fn nostream(&self) -> bool {
        self.tag("nostream").and_then(parse_bool) == Some(true)
    }
}

impl Serialize for MemberData {
    /// The same fields, in the same order, as [`MemberData::to_json`]; only the string
    /// escaping is the serializer's own.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.fields();
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (name, value) in &fields {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A known string field: `null` reads as absent quietly, another type with a warning.
fn string_field(name: &str, value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => {
            tracing::warn!(
                key = KEY,
                field = name,
                "member field is {}, not a string; ignoring it",
                kind(&other)
            );
            None
        }
    }
}

/// A WAL position or timeline: an integer or a decimal string.
fn position_field(name: &str, value: &Value) -> Option<u64> {
    if value.is_null() {
        return None;
    }
    let position = non_negative_int(value);
    if position.is_none() {
        tracing::warn!(
            key = KEY,
            field = name,
            value = %value,
            "member field is not a non-negative integer; ignoring it"
        );
    }
    position
}

/// Patroni's `parse_connection_string`: `urlparse` the Governor-style value, rebuild it
/// without the query (`urlunparse`), and take the first non-empty `application_name`
/// from the query (`parse_qsl`) as the API URL.
fn split_governor_url(value: &str) -> (String, Option<String>) {
    // urlsplit removes tabs and newlines anywhere in the URL.
    let url: String = value
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest = url.as_str();

    let mut scheme = String::new();
    if let Some(colon) = rest.find(':') {
        let candidate = &rest[..colon];
        let valid = candidate.starts_with(|c: char| c.is_ascii_alphabetic())
            && candidate
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            scheme = candidate.to_ascii_lowercase();
            rest = &rest[colon + 1..];
        }
    }
    let mut netloc = "";
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        netloc = &after[..end];
        rest = &after[end..];
    }
    let mut fragment = "";
    if let Some((before, after)) = rest.split_once('#') {
        fragment = after;
        rest = before;
    }
    let mut query = "";
    if let Some((before, after)) = rest.split_once('?') {
        query = after;
        rest = before;
    }

    // urlunparse: `//` only with a non-empty netloc, since `postgres` is not one of
    // Python's `uses_netloc` schemes; empty query and fragment lose their separators.
    let mut conn_url = String::with_capacity(url.len());
    if !scheme.is_empty() {
        conn_url.push_str(&scheme);
        conn_url.push(':');
    }
    if !netloc.is_empty() {
        conn_url.push_str("//");
        conn_url.push_str(netloc);
        if !rest.is_empty() && !rest.starts_with('/') {
            conn_url.push('/');
        }
    }
    conn_url.push_str(rest);
    if !fragment.is_empty() {
        conn_url.push('#');
        conn_url.push_str(fragment);
    }

    let api_url = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .find(|(name, _)| unquote_plus(name) == "application_name")
        .map(|(_, value)| unquote_plus(value));
    (conn_url, api_url)
}

/// Python's `unquote(s.replace('+', ' '))`: `%XX` escapes decoded as UTF-8, invalid
/// sequences replaced by U+FFFD, malformed escapes kept literally.
fn unquote_plus(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex digits are ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits fit a byte"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Member `role`, as Patroni names it.
///
/// Read from the string (`From<&str>`): `primary`, and 3.x's `master`, are
/// [`Role::Primary`]; unknown strings are kept in [`Role::Other`]. Written with
/// [`Role::as_str`] (and `Serialize`), always the 4.x name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// `primary` (also read from 3.x `master`): runs Postgres read-write, which it may
    /// only do while holding the leader key.
    Primary,
    /// `replica`: streams from the primary or another replica.
    Replica,
    /// `standby_leader`: the leader of a standby cluster, replicating from a remote
    /// primary.
    StandbyLeader,
    /// `demoted`: a former primary that stopped being one.
    Demoted,
    /// `uninitialized`: no data directory yet; also what an absent `role` reads as.
    #[default]
    Uninitialized,
    /// `promoted`: promotion requested, not yet finished.
    Promoted,
    /// Anything else, as written.
    Other(String),
}

impl Role {
    /// The name Patroni 4.x writes.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::StandbyLeader => "standby_leader",
            Self::Demoted => "demoted",
            Self::Uninitialized => "uninitialized",
            Self::Promoted => "promoted",
            Self::Other(other) => other,
        }
    }
}

impl From<&str> for Role {
    fn from(role: &str) -> Self {
        match role {
            "primary" | "master" => Self::Primary,
            "replica" => Self::Replica,
            "standby_leader" => Self::StandbyLeader,
            "demoted" => Self::Demoted,
            "uninitialized" => Self::Uninitialized,
            "promoted" => Self::Promoted,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Member `state`: what Postgres is doing.
///
/// Patroni writes one of `initializing new cluster`, `initdb failed`, `running custom
/// bootstrap script`, `custom bootstrap failed`, `creating replica`, `running`,
/// `starting`, `starting after custom bootstrap`, `start failed`, `restarting`, `restart
/// failed`, `stopping`, `stopped`, `stop failed`, `crashed`. Only `running` matters to the
/// HA logic (a candidate must be running), so only it has a variant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MemberState {
    /// `running`.
    Running,
    /// Anything else, as written (including a literal `unknown`).
    Other(String),
    /// Absent (or not a string). Reads as Patroni's default `unknown`, and is not written.
    #[default]
    Unknown,
}

impl MemberState {
    /// The string Patroni shows: the stored one, `unknown` when absent.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "running",
            Self::Other(other) => other,
            Self::Unknown => "unknown",
        }
    }
}

impl From<&str> for MemberState {
    fn from(state: &str) -> Self {
        match state {
            "running" => Self::Running,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MemberState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row was produced by Patroni's own `parse_connection_string` (3.0.2 on
    /// Python 3.11; unchanged in 4.x).
    #[test]
    fn governor_urls_split_like_patroni() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "postgres://u:pw@h:5432/db?application_name=http://h:8008/patroni",
                "postgres://u:pw@h:5432/db",
                Some("http://h:8008/patroni"),
            ),
            (
                "postgres://u:pw@h:5432/db?application_name=http%3A%2F%2Fh%3A8008%2Fpatroni&x=1",
                "postgres://u:pw@h:5432/db",
                Some("http://h:8008/patroni"),
            ),
            (
                "postgres://h/db?x=1&application_name=a+b&application_name=second",
                "postgres://h/db",
                Some("a b"),
            ),
            ("postgres://h/db?application_name=", "postgres://h/db", None),
            ("postgres://h/db?#frag", "postgres://h/db#frag", None),
            (
                "postgres://h/db;p?application_name=z#f",
                "postgres://h/db;p#f",
                Some("z"),
            ),
            (
                "postgresql://h:5432/db?application_name=api",
                "postgresql://h:5432/db",
                Some("api"),
            ),
            ("postgres", "postgres", None),
            ("postgres:foo?application_name=x", "postgres:foo", Some("x")),
            ("postgresXYZ?application_name=x", "postgresXYZ", Some("x")),
            (
                "postgres://h/db?application_name=%ZZ%41",
                "postgres://h/db",
                Some("%ZZA"),
            ),
            (
                "postgres://h/db?a;application_name=b",
                "postgres://h/db",
                None,
            ),
            (
                "postgres://h/db?application_name=x=y",
                "postgres://h/db",
                Some("x=y"),
            ),
            (
                "postgres://[::1]:5432/db?application_name=q",
                "postgres://[::1]:5432/db",
                Some("q"),
            ),
            (
                "postgres:///db?application_name=q",
                "postgres:/db",
                Some("q"),
            ),
            (
                "postgres://h/db?application_name=%C3%A9%FF",
                "postgres://h/db",
                Some("é\u{fffd}"),
            ),
        ];
        for (value, conn_url, api_url) in cases {
            let (got_conn, got_api) = split_governor_url(value);
            assert_eq!(got_conn, *conn_url, "conn_url of {value}");
            assert_eq!(got_api.as_deref(), *api_url, "api_url of {value}");
        }
    }

    #[test]
    fn governor_member_value_reads_as_urls_only() {
        let data = MemberData::parse(
            b"postgres://u:pw@10.0.0.1:5432/postgres?application_name=http://10.0.0.1:8008/patroni",
        );
        assert_eq!(
            data.conn_url.as_deref(),
            Some("postgres://u:pw@10.0.0.1:5432/postgres")
        );
        assert_eq!(
            data.api_url.as_deref(),
            Some("http://10.0.0.1:8008/patroni")
        );
        assert_eq!(data.state, MemberState::Unknown);
        assert_eq!(data.role, Role::Uninitialized);
    }

    #[test]
    fn roles_read_3x_master_and_write_4x_names() {
        assert_eq!(Role::from("master"), Role::Primary);
        assert_eq!(Role::from("primary").as_str(), "primary");
        assert_eq!(Role::from("standby_leader"), Role::StandbyLeader);
        assert_eq!(Role::from("Primary"), Role::Other("Primary".into()));
        assert_eq!(
            serde_json::to_string(&Role::Primary).unwrap(),
            r#""primary""#
        );
        assert_eq!(
            serde_json::to_string(&MemberState::Running).unwrap(),
            r#""running""#
        );
    }
}
