//! The state of one cluster, exactly as Patroni 4.x keeps it in the DCS.
//!
//! Every backend stores a flat keyspace under the cluster's path
//! (`/<namespace>/<scope>/`, namespace default `/service`), hands the keys it read to
//! [`ClusterState::from_entries`] as [`RawEntry`]s, and writes values produced by the
//! `to_json` methods here. Because parsing and serializing live in one place, every
//! backend reads a foreign writer's values the same way, and a Patroni node (or
//! `patronictl`, haproxy checks, confd templates) reads ours.
//!
//! # Keys
//!
//! | Key (relative) | Value | Written by | Lifetime | Type |
//! |---|---|---|---|---|
//! | `initialize` | `""`, then the system identifier (plain text) | bootstrap winner | persistent, create-if-absent | [`Initialize`] |
//! | `config` | JSON dynamic configuration | bootstrap, `PATCH /config`, `patronictl edit-config` | persistent, CAS | [`ClusterConfig`] |
//! | `leader` | the holder's member name (plain text) | the leader | TTL / lease / session, CAS | [`Leader`] |
//! | `members/<name>` | JSON member status | each member, every cycle | TTL / lease / session | [`Member`], [`MemberData`] |
//! | `failover` | JSON `{"leader","member","scheduled_at"}` | REST API, `patronictl` | persistent, CAS | [`Failover`] |
//! | `sync` | JSON `{"leader","quorum","sync_standby"}` | the leader | persistent, CAS | [`SyncState`] |
//! | `history` | JSON array of timeline switches | the primary | persistent | [`TimelineHistory`] |
//! | `status` | JSON `{"optime","slots","retain_slots"}` | the leader | persistent | [`Status`] |
//! | `optime/leader` | plain integer (Patroni < 2.1.0) | the leader, for old members | persistent | [`Status`] |
//! | `failsafe` | JSON `{name: api_url}` | the leader, in failsafe mode | persistent | [`Failsafe`] |
//!
//! Only `leader` and the member keys expire; the lock is the single safety mechanism (a
//! member runs Postgres read-write only while it can renew `leader`). Everything else
//! is advisory state that a reader must survive being garbage.
//!
//! # Reading: lenient and total
//!
//! Foreign writers (older Patroni versions, hand edits with `etcdctl`, half-written
//! values) must never crash or wedge the agent, so every `parse(raw: &[u8]) -> Self` is
//! total: invalid UTF-8, invalid JSON or JSON of the wrong type reads as the type's
//! empty or unknown value, and a `tracing::warn!` names the key and what was wrong.
//! Where Patroni is lenient in a particular way (3.x role `master`, booleans spelled `on`
//! or `"yes"`, numeric strings, the Governor-style member URL, a `leader:candidate`
//! failover) we read the same way, so a value means the same to us as to a Patroni node.
//!
//! # Writing: as Patroni 4.x writes
//!
//! `to_json` produces the bytes Patroni's `json.dumps(value, separators=(',', ':'))`
//! would: compact, ASCII-only (`\u00e9`), Patroni's field order, Python's float format.
//! Patroni compares value *strings* to decide "changed" (the etcd3 watch wakes the HA loop
//! only when `leader`, `status` or `config` text changes), so matching its text avoids
//! spurious wakeups. Objects kept as a `serde_json::Map` (config, tags, unknown member
//! fields) come out in the key order they were read or built in (`preserve_order`).

mod json;
mod lenient;
mod member;
mod slot;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::fmt;

pub use json::write_str as write_python_json_string;
pub use member::{MemberData, MemberState, Role};
pub use slot::slot_name_from_member_name;
pub use values::{
    ClusterConfig, Failover, Failsafe, HistoryLine, Initialize, Status, SyncState, TimelineHistory,
};

/// A backend's version of one key, compared for equality only (compare-and-set).
///
/// Opaque on purpose: etcd's `mod_revision`, `ZooKeeper`'s znode `version`, Consul's
/// `ModifyIndex` and Kubernetes' `resourceVersion` are all carried as text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// Wraps a backend's version as text.
    pub fn new(version: impl fmt::Display) -> Self {
        Self(version.to_string())
    }

    /// The backend's version as it wrote it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number that only grows for a scope, taken each time a member acquires the leader key.
///
/// Anything that a stale leader could still reach (a proxy, a storage layer, a table
/// stamped with it) can refuse a writer whose token is lower than one it has seen.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One key as a backend read it, before parsing. Backends build these; the parsing is
/// shared, so every backend reads foreign values the same way.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// Path relative to the scope, e.g. `leader` or `members/pg0`.
    pub key: String,
    /// The stored bytes, as a foreign writer may have left them.
    pub value: Vec<u8>,
    /// The key's version, for compare-and-set.
    pub version: Version,
    /// The lease, session or ephemeral owner the key is bound to, if any.
    pub owner: Option<String>,
    /// The store's creation stamp of the key (etcd `create_revision`, `ZooKeeper` `czxid`,
    /// ...): the fencing token when the key is `leader`.
    pub created: u64,
}

/// A parsed value with the version of the key it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The key's version: pass it back to update the key with compare-and-set.
    pub version: Version,
    /// The parsed value.
    pub value: T,
}

/// One snapshot of a scope: every key, parsed.
///
/// A field is `None` when its key is absent, which is different from a present key
/// holding garbage (that reads as the type's empty value). Built only by
/// [`ClusterState::from_entries`] in backends; the HA logic reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// `initialize`: `None` means the cluster was never bootstrapped (or the bootstrap
    /// failed and the key was deleted): a member may race to bootstrap it.
    pub initialize: Option<Versioned<Initialize>>,
    /// `config`: the dynamic configuration.
    pub config: Option<Versioned<ClusterConfig>>,
    /// `leader`: who holds the lock. `Some` whenever the key exists, whatever it holds.
    pub leader: Option<Leader>,
    /// `members/<name>`, sorted by name, one per name.
    pub members: Vec<Member>,
    /// `failover`: a requested switchover or failover.
    pub failover: Option<Versioned<Failover>>,
    /// `sync`: the synchronous replication state.
    pub sync: Option<Versioned<SyncState>>,
    /// `history`: the timeline switches.
    pub history: Option<Versioned<TimelineHistory>>,
    /// `status` (or the legacy `optime/leader` when `status` is absent).
    pub status: Option<Versioned<Status>>,
    /// `failsafe`: the members that may vouch for a primary without the DCS.
    pub failsafe: Option<Versioned<Failsafe>>,
}

impl ClusterState {
    /// Parses the keys of one scope. Total: never fails, never panics.
    ///
    /// Keys are relative to the scope (`leader`, `members/pg0`, `optime/leader`, ...).
    /// Keys not in the table of the [module docs](self) are ignored: MPP/Citus group
    /// subfolders (`1/leader`), `members/a/b`, `members/` with no name, anything newer.
    /// When a key appears twice the last entry wins. `status` falls back to
    /// `optime/leader` only when `status` is absent (a garbage `status` still wins, as in
    /// Patroni). Every warning is emitted inside a `dcs_entry` span carrying the key.
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = RawEntry>) -> Self {
        let mut keys: BTreeMap<String, RawEntry> = BTreeMap::new();
        let mut members: BTreeMap<String, RawEntry> = BTreeMap::new();
        for entry in entries {
            if let Some(name) = entry.key.strip_prefix("members/") {
                if !name.is_empty() && !name.contains('/') {
                    members.insert(name.to_owned(), entry);
                }
            } else {
                keys.insert(entry.key.clone(), entry);
            }
        }
        let mut take = |key: &str| keys.remove(key);

        let status = take("status").or_else(|| take("optime/leader"));
        Self {
            initialize: take("initialize").map(|e| versioned(e, Initialize::parse)),
            config: take("config").map(|e| versioned(e, ClusterConfig::parse)),
            leader: take("leader").map(Leader::from_entry),
            members: members
                .into_iter()
                .map(|(name, entry)| Member::from_entry(name, entry))
                .collect(),
            failover: take("failover").map(|e| versioned(e, Failover::parse)),
            sync: take("sync").map(|e| versioned(e, SyncState::parse)),
            history: take("history").map(|e| versioned(e, TimelineHistory::parse)),
            status: status.map(|e| versioned(e, Status::parse)),
            failsafe: take("failsafe").map(|e| versioned(e, Failsafe::parse)),
        }
    }

    /// The member called `name`, if its key exists.
    #[must_use]
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|member| member.name.as_str().cmp(name))
            .ok()
            .map(|index| &self.members[index])
    }

    /// The member key of the current leader, if both the lock and that key exist.
    #[must_use]
    pub fn leader_member(&self) -> Option<&Member> {
        self.member(&self.leader.as_ref()?.name)
    }
}

fn versioned<T>(entry: RawEntry, parse: fn(&[u8]) -> T) -> Versioned<T> {
    let _span = tracing::warn_span!("dcs_entry", key = %entry.key).entered();
    Versioned {
        version: entry.version,
        value: parse(&entry.value),
    }
}

/// The holder of the `leader` key: the lock.
///
/// **Writer:** the winner of the leader race creates it atomically (create-if-absent)
/// with its own member name, bound to its TTL, lease or session, and renews it every cycle
/// with compare-and-set; it deletes it (compare-and-delete) on a voluntary release.
///
/// **Reading:** the value is the plain member name (not JSON), decoded lossily and
/// trimmed. An existing key is always a `Leader`, even when its value is garbage or empty:
/// the lock is held by *someone*, and treating it as free could start a second primary.
/// (Patroni would treat an empty name as unlocked; we do not.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The member name stored in the key.
    pub name: String,
    /// The key's version.
    pub version: Version,
    /// The lease/session the key is bound to: a holder whose own lease differs has lost
    /// the key to a new holding, even if the name is still its own.
    pub owner: Option<String>,
    /// The fencing token of this holding: the key's creation stamp, so it changes only
    /// when the key is created anew, never on renewal.
    pub token: FencingToken,
}

impl Leader {
    fn from_entry(entry: RawEntry) -> Self {
        let _span = tracing::warn_span!("dcs_entry", key = %entry.key).entered();
        let text = String::from_utf8_lossy(&entry.value);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            tracing::warn!(
                key = "leader",
                "leader name is not valid UTF-8; decoding it lossily"
            );
        }
        let name = text.trim().to_owned();
        if name.is_empty() {
            tracing::warn!(
                key = "leader",
                "leader key holds no name; the lock is still held"
            );
        }
        Self {
            name,
            version: entry.version,
            owner: entry.owner,
            token: FencingToken(entry.created),
        }
    }
}

/// `members/<name>`: one member's key.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The key's basename: the member's name (the pod name on Kubernetes).
    pub name: String,
    /// The key's version.
    pub version: Version,
    /// The lease/session the key is bound to.
    pub owner: Option<String>,
    /// The published status.
    pub data: MemberData,
}

impl Member {
    fn from_entry(name: String, entry: RawEntry) -> Self {
        let _span = tracing::warn_span!("dcs_entry", key = %entry.key).entered();
        Self {
            data: MemberData::parse(&entry.value),
            name,
            version: entry.version,
            owner: entry.owner,
        }
    }
}
