//! Where a client's cluster lives, who the client is, and its timing.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Patroni's default namespace.
pub const DEFAULT_NAMESPACE: &str = "/service";

/// Key names relative to a scope, as Patroni spells them.
pub mod keys {
    /// `initialize`: `""` while bootstrapping, then the database system identifier.
    pub const INITIALIZE: &str = "initialize";
    /// `config`: the dynamic configuration (JSON).
    pub const CONFIG: &str = "config";
    /// `leader`: the member name of the leader lock holder.
    pub const LEADER: &str = "leader";
    /// `members/`: one key per member.
    pub const MEMBERS: &str = "members/";
    /// `failover`: a requested switchover or failover (JSON).
    pub const FAILOVER: &str = "failover";
    /// `sync`: synchronous replication state (JSON).
    pub const SYNC: &str = "sync";
    /// `history`: timeline history (JSON array).
    pub const HISTORY: &str = "history";
    /// `status`: the leader's WAL position and slots (JSON).
    pub const STATUS: &str = "status";
    /// `optime/leader`: the legacy (Patroni < 2.1) form of `status`.
    pub const LEGACY_OPTIME: &str = "optime/leader";
    /// `failsafe`: members the leader may talk to when the DCS is down (JSON).
    pub const FAILSAFE: &str = "failsafe";
}

/// The place of one cluster in a store: `/<namespace>/<scope>/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterPath {
    namespace: String,
    scope: String,
    base: String,
}

impl ClusterPath {
    /// The cluster `scope` under Patroni's default namespace `/service`.
    pub fn new(scope: &str) -> Result<Self> {
        Self::with_namespace(DEFAULT_NAMESPACE, scope)
    }

    /// The cluster `scope` under `namespace`, normalised as Patroni does (`/` joined, runs
    /// of `/` squeezed), so that `service`, `/service` and `/service/` name one place.
    ///
    /// A scope must be a non-empty single path segment: a `/` inside it would put one
    /// cluster's keys inside another's, and deleting one would delete both.
    pub fn with_namespace(namespace: &str, scope: &str) -> Result<Self> {
        if scope.is_empty() || scope.contains('/') {
            return Err(Error::InvalidConfig(format!(
                "scope {scope:?} must be a non-empty name without '/'"
            )));
        }
        let namespace = namespace.trim_matches('/');
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE.trim_start_matches('/')
        } else {
            namespace
        };
        let mut base = String::with_capacity(namespace.len() + scope.len() + 3);
        for segment in namespace.split('/').filter(|s| !s.is_empty()) {
            base.push('/');
            base.push_str(segment);
        }
        let namespace = base.clone();
        base.push('/');
        base.push_str(scope);
        base.push('/');
        Ok(Self {
            namespace,
            scope: scope.to_owned(),
            base,
        })
    }

    /// The namespace, with one leading `/` and none trailing (`/service`).
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The scope (cluster name).
    #[must_use]
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The prefix of every key of this cluster, with its trailing `/` (`/service/pg/`).
    /// The trailing `/` is what keeps scope `pg` from matching scope `pg2`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.base
    }

    /// The full path of a key relative to the scope (`leader` → `/service/pg/leader`).
    #[must_use]
    pub fn key(&self, relative: &str) -> String {
        format!("{}{relative}", self.base)
    }

    /// The key relative to the scope, if `full` lies inside it.
    #[must_use]
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.base.as_str())
    }
}

impl fmt::Display for ClusterPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// The three timing knobs of Patroni's dynamic configuration, checked together.
///
/// The leader renews at least every `loop_wait`; a renewal (and the snapshot before it)
/// may take up to `retry_timeout` each; so a holder whose renewal failed knows it within
/// `loop_wait + 2 * retry_timeout` of its last success. That must not exceed `ttl`, or the
/// lock could expire and be taken while the old holder still believes it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    ttl: Duration,
    loop_wait: Duration,
    retry_timeout: Duration,
}

impl Timing {
    /// Checks and builds a timing. Every knob must be positive and
    /// `loop_wait + 2 * retry_timeout <= ttl`.
    pub fn new(ttl: Duration, loop_wait: Duration, retry_timeout: Duration) -> Result<Self> {
        for (name, value) in [
            ("ttl", ttl),
            ("loop_wait", loop_wait),
            ("retry_timeout", retry_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must be positive")));
            }
        }
        let worst = loop_wait + retry_timeout * 2;
        if worst > ttl {
            return Err(Error::InvalidConfig(format!(
                "loop_wait ({loop_wait:?}) + 2 * retry_timeout ({retry_timeout:?}) = {worst:?} \
                 exceeds ttl ({ttl:?}): the leader could not notice a failed renewal before \
                 its key expires and another member takes it; lower loop_wait or \
                 retry_timeout, or raise ttl"
            )));
        }
        Ok(Self {
            ttl,
            loop_wait,
            retry_timeout,
        })
    }

    /// [`Timing::new`] from whole seconds, as Patroni's configuration gives them.
    pub fn from_secs(ttl: u64, loop_wait: u64, retry_timeout: u64) -> Result<Self> {
        Self::new(
            Duration::from_secs(ttl),
            Duration::from_secs(loop_wait),
            Duration::from_secs(retry_timeout),
        )
    }

    /// Lifetime of the leader key and member keys after the last renewal.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Period of the HA loop.
    #[must_use]
    pub fn loop_wait(&self) -> Duration {
        self.loop_wait
    }

    /// Deadline of one DCS call, retries included.
    #[must_use]
    pub fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }
}

impl Default for Timing {
    /// Patroni's defaults: `ttl` 30 s, `loop_wait` 10 s, `retry_timeout` 10 s.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            loop_wait: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(10),
        }
    }
}

/// Who a client is and where its cluster lives: what every backend's constructor takes
/// besides its own connection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    path: ClusterPath,
    name: String,
    timing: Timing,
}

impl ClientOptions {
    /// Member `name` of the cluster at `path`, with Patroni's default timing.
    ///
    /// The name is the basename of the member key and the value of the leader key, so it
    /// must be non-empty and free of `/`.
    pub fn new(path: ClusterPath, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidConfig(format!(
                "member name {name:?} must be non-empty and without '/'"
            )));
        }
        Ok(Self {
            path,
            name: name.to_owned(),
            timing: Timing::default(),
        })
    }

    /// Replaces the timing.
    #[must_use]
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The cluster's place in the store.
    #[must_use]
    pub fn path(&self) -> &ClusterPath {
        &self.path
    }

    /// This member's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The timing.
    #[must_use]
    pub fn timing(&self) -> Timing {
        self.timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_as_patroni_does() {
        for namespace in ["service", "/service", "/service/", "//service//", ""] {
            let path = ClusterPath::with_namespace(namespace, "batman").unwrap();
            assert_eq!(path.prefix(), "/service/batman/", "{namespace:?}");
            assert_eq!(path.namespace(), "/service");
        }
        let path = ClusterPath::with_namespace("/a//b/", "pg").unwrap();
        assert_eq!(path.key("leader"), "/a/b/pg/leader");
        assert_eq!(path.relative("/a/b/pg/members/x"), Some("members/x"));
        assert_eq!(path.relative("/a/b/pg2/leader"), None);
    }

    #[test]
    fn scope_and_name_must_be_single_segments() {
        assert!(ClusterPath::new("").is_err());
        assert!(ClusterPath::new("a/b").is_err());
        let path = ClusterPath::new("pg").unwrap();
        assert!(ClientOptions::new(path.clone(), "").is_err());
        assert!(ClientOptions::new(path.clone(), "pg/0").is_err());
        assert_eq!(ClientOptions::new(path, "pg0").unwrap().name(), "pg0");
    }

    #[test]
    fn timing_rule_is_enforced_with_a_clear_message() {
        assert!(Timing::from_secs(30, 10, 10).is_ok());
        assert!(Timing::from_secs(3, 1, 1).is_ok());
        let error = Timing::from_secs(20, 10, 10).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::InvalidConfig(_)));
        assert!(message.contains("exceeds ttl"), "{message}");
        assert!(Timing::from_secs(30, 0, 10).is_err());
        assert_eq!(Timing::default(), Timing::from_secs(30, 10, 10).unwrap());
    }
}
