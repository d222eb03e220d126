//! The agent's configuration: Patroni's YAML file, read unchanged.
//!
//! A Patroni configuration file for the features the agent implements loads as it is:
//! [`Config::load_with_env`] reads it with the `PATRONI_*` environment variables merged over
//! it exactly as Patroni 3.0.2 does (before checking, so the environment may supply
//! required keys), [`Config::from_env`] builds one from the environment alone (Patroni's
//! behaviour without a file), and [`Config::apply_env`] merges more variables over a
//! loaded configuration. Loading never panics, whatever the input.
//!
//! ```
//! use ha_agent::config::Config;
//!
//! let yaml = "
//! scope: batman
//! restapi: {listen: 0.0.0.0:8008, connect_address: 10.0.0.1:8008}
//! etcd3: {hosts: 10.0.0.5:2379}
//! postgresql:
//!   listen: 0.0.0.0:5432
//!   connect_address: 10.0.0.1:5432
//!   data_dir: /var/lib/postgresql/data
//!   authentication:
//!     superuser: {username: postgres}
//!     replication: {username: replicator}
//! ";
//! let env = [("PATRONI_NAME".to_owned(), "pg0".to_owned())];
//! let (config, warnings) = Config::from_yaml_str_with_env(yaml, env.into_iter()).unwrap();
//! assert!(warnings.is_empty());
//! assert_eq!(config.client_options().path().key("leader"), "/service/batman/leader");
//! assert_eq!(config.api_url(), "http://10.0.0.1:8008/patroni");
//! assert_eq!(config.conn_url(), "postgres://10.0.0.1:5432/postgres");
//! ```
//!
//! # What is refused, what is only said
//!
//! * A key neither Patroni nor the agent knows is a [`Warning`] naming its full path
//!   (`postgresql.paramters`): probably a typo, never fatal, as Patroni would not refuse it
//!   either.
//! * A Patroni key the agent does not implement is a [`Warning`] when ignoring it is safe
//!   (`log`, `restapi.request_queue_size`, `postgresql.proxy_address`, ...), and a
//!   [`ConfigError::Unsupported`] when ignoring it would be unsafe or would do something
//!   else than asked: another DCS (`consul`, `kubernetes`, `etcd` v2, `raft`,
//!   `exhibitor`), `watchdog.mode: required`, a custom `bootstrap.method`, `citus`,
//!   `synchronous_mode` or `standby_cluster` in `bootstrap.dcs`.
//! * A bad value is one [`ConfigError`] with its path: `postgresql.listen: "abc" is not
//!   host:port`.
//!
//! # Timing
//!
//! `bootstrap.dcs.ttl`, `loop_wait` and `retry_timeout` must satisfy
//! `loop_wait + 2 * retry_timeout <= ttl` ([`dcs_core::Timing`]). Like Patroni 4.x (and
//! unlike a refusal), the agent raises values below the minimums (20, 1, 3) and shortens
//! `loop_wait` (or, if that is not enough, sets `loop_wait = 1` and
//! `retry_timeout = (ttl - 1) / 2`) with a [`WarningKind::Adjusted`] warning: the same
//! dynamic configuration in the DCS is read the same way by every member
//! ([`dcs_core::model::ClusterConfig`]'s accessors), so refusing it locally would only make
//! this member disagree with its peers. A value that is not an integer is an error.

mod env;
mod error;
mod parse;
mod shell;

use std::fmt;
use std::path::{Path, PathBuf};

use dcs_core::model::ClusterConfig;
use dcs_core::{ClientOptions, ClusterPath, Timing};
use dcs_etcd::EtcdConfig;
use dcs_zk::ZooKeeperConfig;
use serde_json::{Map, Value};

pub use error::{ConfigError, Warning, WarningKind};
pub use shell::split_command;

/// The whole configuration of one member, checked.
///
/// Fields are public for reading; build one with [`Config::from_yaml_str`],
/// [`Config::load`] or [`Config::from_env`], so that every invariant below holds:
/// `scope` and `name` are valid [`ClientOptions`] parts, exactly one DCS is configured, and
/// the timing satisfies [`Timing`]'s rule. `Debug` shows no password.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// `scope`: the cluster's name.
    pub scope: String,
    /// `name`: this member's name, unique in the cluster.
    pub name: String,
    /// `namespace`: the prefix of the cluster's keys (default `/service`).
    pub namespace: String,
    /// `restapi`.
    pub restapi: RestApi,
    /// The one DCS section.
    pub dcs: DcsConfig,
    /// `bootstrap`.
    pub bootstrap: Bootstrap,
    /// `postgresql`.
    pub postgresql: Postgresql,
    /// `tags`.
    pub tags: Tags,
    /// `watchdog`.
    pub watchdog: Watchdog,
    /// The document as read (environment included), so that [`Config::apply_env`] can
    /// merge the environment as Patroni does, into the raw keys, before checking.
    raw: Map<String, Value>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `raw` holds every password as written, so it stays out.
        f.debug_struct("Config")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("restapi", &self.restapi)
            .field("dcs", &self.dcs)
            .field("bootstrap", &self.bootstrap)
            .field("postgresql", &self.postgresql)
            .field("tags", &self.tags)
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RestApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestApi")
            .field("listen", &self.listen)
            .field("connect_address", &self.connect_address)
            .field("authentication", &self.authentication)
            .field("certfile", &self.certfile)
            .field("keyfile", &self.keyfile)
            .field(
                "keyfile_password",
                &self.keyfile_password.as_ref().map(|_| "<redacted>"),
            )
            .field("cafile", &self.cafile)
            .field("verify_client", &self.verify_client)
            .field("allowlist", &self.allowlist)
            .field("allowlist_include_members", &self.allowlist_include_members)
            .finish()
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The DCS the member uses: the place where a backend is chosen is
/// [`crate::connect::connect`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DcsConfig {
    /// `etcd3:`, Patroni's keys (see [`EtcdConfig`]).
    Etcd3(EtcdConfig),
    /// `zookeeper:`, Patroni's keys (see [`ZooKeeperConfig`]).
    ZooKeeper(ZooKeeperConfig),
}

/// `host:port`, as Patroni's `listen` and `connect_address` keys give it.
///
/// The host may be a name, an IPv4 address, an IPv6 address in brackets (`[::1]:5432`),
/// and, for `postgresql.listen` only, a comma-separated list or `*` (it becomes
/// PostgreSQL's `listen_addresses`). It is empty in `restapi.listen: ":8008"` (every
/// interface).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host part, IPv6 brackets removed.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl fmt::Display for HostPort {
    /// `host:port`, IPv6 addresses in brackets, as in a URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') && !self.host.contains(',') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A user name and password (`restapi.authentication`, `postgresql.authentication.*`).
/// `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `password`; none for peer, certificate or `.pgpass`-only authentication.
    pub password: Option<String>,
    /// The libpq options Patroni accepts besides (`sslmode`, `sslcert`, `sslkey`,
    /// `sslpassword`, `sslrootcert`, `sslcrl`, `sslcrldir`, `gssencmode`,
    /// `channel_binding`), in the order written.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `restapi`: where this member's REST API listens and how peers reach it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestApi {
    /// `listen` (required).
    pub listen: HostPort,
    /// `connect_address`: what peers and `patronictl` use; Patroni falls back to `listen`.
    pub connect_address: Option<HostPort>,
    /// `authentication`: basic-auth credentials required by the unsafe endpoints.
    pub authentication: Option<Credentials>,
    /// `certfile`: serve HTTPS with this certificate (and the API URL becomes `https`).
    pub certfile: Option<PathBuf>,
    /// `keyfile`: the certificate's key (default: inside `certfile`).
    pub keyfile: Option<PathBuf>,
    /// `keyfile_password`.
    pub keyfile_password: Option<String>,
    /// `cafile`: CA for client certificates.
    pub cafile: Option<PathBuf>,
    /// `verify_client`: `none`, `optional` or `required`.
    pub verify_client: Option<String>,
    /// `allowlist`: hosts/networks allowed to call the unsafe endpoints.
    pub allowlist: Vec<String>,
    /// `allowlist_include_members`: members' own addresses are allowed too.
    pub allowlist_include_members: bool,
}

/// `bootstrap`: how a new cluster is created.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Bootstrap {
    /// `bootstrap.dcs`: the initial dynamic configuration, written as it is to the DCS
    /// `config` key by the member that initializes the cluster. Its typed settings are
    /// read with [`ClusterConfig`]'s accessors (Patroni's defaults and adjustments).
    pub dcs: ClusterConfig,
    /// `bootstrap.initdb`: options for `initdb`.
    pub initdb: Vec<InitdbOption>,
    /// `bootstrap.pg_hba`: legacy lines added to `pg_hba.conf` after `initdb` (Patroni
    /// prefers `postgresql.pg_hba`).
    pub pg_hba: Vec<String>,
}

/// One `bootstrap.initdb` entry: `- data-checksums` or `- encoding: UTF8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitdbOption {
    /// A switch: `--data-checksums`.
    Flag(String),
    /// An option with a value: `--encoding=UTF8`.
    Value(String, String),
}

impl InitdbOption {
    /// The `initdb` argument: `--data-checksums`, `--encoding=UTF8`.
    #[must_use]
    pub fn to_arg(&self) -> String {
        match self {
            Self::Flag(name) => format!("--{name}"),
            Self::Value(name, value) => format!("--{name}={value}"),
        }
    }
}

/// `postgresql`: the local PostgreSQL.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Postgresql {
    /// `listen`: becomes `listen_addresses` and `port`.
    pub listen: HostPort,
    /// `connect_address`: what other members and clients use (the member's `conn_url`).
    pub connect_address: HostPort,
    /// `data_dir` (required).
    pub data_dir: PathBuf,
    /// `config_dir`: where `postgresql.conf` lives (default `data_dir`).
    pub config_dir: Option<PathBuf>,
    /// `bin_dir`: where `pg_ctl`, `initdb`, ... are (default: `$PATH`).
    pub bin_dir: Option<PathBuf>,
    /// `pgpass`: the password file Patroni writes for libpq.
    pub pgpass: Option<PathBuf>,
    /// `database`: the database of `conn_url` (default `postgres`).
    pub database: String,
    /// `authentication.superuser` (required).
    pub superuser: Credentials,
    /// `authentication.replication` (required).
    pub replication: Credentials,
    /// `authentication.rewind` (default: the superuser).
    pub rewind: Option<Credentials>,
    /// `parameters`: local PostgreSQL settings, merged over the dynamic ones.
    pub parameters: Map<String, Value>,
    /// `pg_hba`: the whole `pg_hba.conf`, one line per entry.
    pub pg_hba: Vec<String>,
    /// `use_pg_rewind` set locally (Patroni also reads it from the dynamic config).
    pub use_pg_rewind: Option<bool>,
    /// `pg_ctl_timeout` in seconds (Patroni's default 60).
    pub pg_ctl_timeout: u64,
    /// `pre_promote`: a fencing command run after the leader lock is taken and before
    /// promoting; a failure gives the lock up instead of promoting.
    pub pre_promote: Option<String>,
    /// `before_stop`: a command run (and waited for) before every stop but an emergency
    /// one.
    pub before_stop: Option<String>,
    /// `callbacks`: the command line of each of `on_start`, `on_stop`, `on_restart`,
    /// `on_reload` and `on_role_change` that is set.
    pub callbacks: std::collections::BTreeMap<String, String>,
}

/// `tags`: what this member tells the others about itself.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
// Patroni's tag names are the interface, and each is an independent flag.
#[allow(clippy::struct_excessive_bools)]
pub struct Tags {
    /// `nofailover`: never becomes the leader.
    pub nofailover: bool,
    /// `failover_priority`: among replicas with the same LSN, the higher wins; 0 means
    /// never (what `nofailover` implies).
    pub failover_priority: Option<i64>,
    /// `noloadbalance`: `/replica` answers 503.
    pub noloadbalance: bool,
    /// `clonefrom`: preferred source of base backups for new members.
    pub clonefrom: bool,
    /// `nosync`: never chosen as a synchronous standby.
    pub nosync: bool,
    /// Every tag as written (custom tags included), for the member key's `tags` field.
    pub all: Map<String, Value>,
}

impl Tags {
    /// Whether this member may ever become the leader: not `nofailover`, and not
    /// `failover_priority: 0` (Patroni 4.x).
    #[must_use]
    pub fn may_fail_over(&self) -> bool {
        !self.nofailover && self.failover_priority.is_none_or(|p| p > 0)
    }

    /// The member key's `tags` object, as Patroni's `get_tags` builds it: every tag as
    /// written, except `clonefrom`, `nofailover`, `noloadbalance` and `nosync` when false;
    /// those four are written as JSON `true` when set, whatever spelling the file used
    /// (`yes`, `on`), so every reader takes them as set.
    #[must_use]
    pub fn member_tags(&self) -> Map<String, Value> {
        let flags = [
            ("clonefrom", self.clonefrom),
            ("nofailover", self.nofailover),
            ("noloadbalance", self.noloadbalance),
            ("nosync", self.nosync),
        ];
        let mut tags = Map::new();
        for (name, value) in &self.all {
            match flags.iter().find(|(flag, _)| flag == name) {
                Some((_, true)) => {
                    tags.insert(name.clone(), Value::Bool(true));
                }
                Some((_, false)) => {}
                None if value.is_null() => {}
                None => {
                    tags.insert(name.clone(), value.clone());
                }
            }
        }
        tags
    }

    /// The priority in the leader race among equally healthy replicas (Patroni 4.x's
    /// default 1; 0 when the member may not fail over).
    #[must_use]
    pub fn effective_failover_priority(&self) -> i64 {
        if self.may_fail_over() {
            self.failover_priority.unwrap_or(1)
        } else {
            0
        }
    }
}

/// `watchdog.mode` (`required` is refused: the agent has no watchdog support yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WatchdogMode {
    /// `off`.
    Off,
    /// `automatic`, Patroni's default: use a watchdog if there is one. The agent has none
    /// yet, so it runs without (warning when the mode is written out), which is what
    /// Patroni does on a host without a watchdog device.
    #[default]
    Automatic,
}

/// `watchdog`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Watchdog {
    /// `mode`.
    pub mode: WatchdogMode,
    /// `device` (default `/dev/watchdog`).
    pub device: Option<PathBuf>,
    /// `safety_margin` in seconds (default 5).
    pub safety_margin: Option<u64>,
}

impl Config {
    /// Reads a configuration from YAML text, environment not applied. Returns the
    /// configuration and the warnings to log.
    pub fn from_yaml_str(text: &str) -> Result<(Self, Vec<Warning>), ConfigError> {
        let raw = parse::document(text)?;
        parse::config(raw)
    }

    /// Reads a configuration file, environment not applied.
    pub fn load(path: impl AsRef<Path>) -> Result<(Self, Vec<Warning>), ConfigError> {
        Self::from_yaml_str(&read(path.as_ref())?)
    }

    /// Reads YAML text with the `PATRONI_*` variables of `vars` merged over it before
    /// anything is checked, as Patroni does: a file may leave out what the environment
    /// gives (`name` from `PATRONI_NAME` in a container, passwords from secrets).
    pub fn from_yaml_str_with_env(
        text: &str,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        Self::merged(parse::document(text)?, vars)
    }

    /// Reads a configuration file with the environment merged over it: what
    /// `ha-agent <config.yml>` does with `std::env::vars()`, like `patroni <config.yml>`.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        Self::from_yaml_str_with_env(&read(path.as_ref())?, vars)
    }

    fn merged(
        mut raw: Map<String, Value>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        let (overlay, mut env_warnings) = env::overlay(vars);
        if let Value::Object(overlay) = &overlay {
            env::patch(&mut raw, overlay);
        }
        let (config, mut warnings) = parse::config(raw)?;
        warnings.append(&mut env_warnings);
        Ok((config, warnings))
    }

    /// A configuration from the environment alone, as Patroni without a file argument:
    /// the YAML in `PATRONI_CONFIGURATION` if it is set (the other `PATRONI_*` variables
    /// are then ignored, with a warning each, as Patroni ignores them), else the
    /// `PATRONI_*` variables mapped as [`Config::apply_env`] maps them.
    pub fn from_env(
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<Warning>), ConfigError> {
        let vars: Vec<(String, String)> = vars.collect();
        let document = vars
            .iter()
            .find(|(k, v)| k == "PATRONI_CONFIGURATION" && !v.is_empty())
            .map(|(_, text)| parse::document(text))
            .transpose()?
            .filter(|document| !document.is_empty());
        if let Some(document) = document {
            let (config, mut warnings) = parse::config(document)?;
            warnings.extend(
                vars.iter()
                    .filter(|(k, _)| k.starts_with("PATRONI_") && k != "PATRONI_CONFIGURATION")
                    .map(|(k, _)| {
                        Warning::new(
                            WarningKind::UnusedEnvironment,
                            k.clone(),
                            "ignored: PATRONI_CONFIGURATION is the whole configuration, as in \
                             Patroni",
                        )
                    }),
            );
            return Ok((config, warnings));
        }
        Self::merged(Map::new(), vars.into_iter())
    }

    /// Merges `PATRONI_*` environment variables over this configuration, as Patroni merges
    /// them over its file, and checks the result. The environment is a parameter so that
    /// callers choose it (`std::env::vars()` in `main`, a list in tests).
    ///
    /// On error `self` is unchanged. The warnings returned are those of the merged
    /// configuration plus one per `PATRONI_*` variable that maps to nothing.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Vec<Warning>, ConfigError> {
        let (config, warnings) = Self::merged(self.raw.clone(), vars)?;
        *self = config;
        Ok(warnings)
    }

    /// The cluster's place in the DCS.
    #[must_use]
    pub fn cluster_path(&self) -> ClusterPath {
        ClusterPath::with_namespace(&self.namespace, &self.scope)
            .expect("scope was checked when the configuration was read")
    }

    /// The timing of the DCS clients, from `bootstrap.dcs` with Patroni 4.x's minimums and
    /// adjustment (see the module docs). The running agent follows the DCS `config` key
    /// once it has read it; this is the timing before that.
    #[must_use]
    pub fn timing(&self) -> Timing {
        let dcs = &self.bootstrap.dcs;
        Timing::from_secs(dcs.ttl(), dcs.loop_wait(), dcs.retry_timeout())
            .expect("ClusterConfig's accessors always satisfy the timing rule")
    }

    /// Who this member is, where its cluster lives, and the timing: what
    /// [`crate::connect::connect`] gives the backend.
    #[must_use]
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::new(self.cluster_path(), &self.name)
            .expect("name was checked when the configuration was read")
            .with_timing(self.timing())
    }

    /// The member key's `conn_url`, as Patroni builds it:
    /// `postgres://<postgresql.connect_address>/<database>`, no credentials.
    #[must_use]
    pub fn conn_url(&self) -> String {
        format!(
            "postgres://{}/{}",
            self.postgresql.connect_address, self.postgresql.database
        )
    }

    /// The member key's `api_url`, as Patroni builds it:
    /// `<http|https>://<restapi.connect_address, else listen>/patroni`, `https` when
    /// `restapi.certfile` is set.
    #[must_use]
    pub fn api_url(&self) -> String {
        let scheme = if self.restapi.certfile.is_some() {
            "https"
        } else {
            "http"
        };
        let address = self
            .restapi
            .connect_address
            .as_ref()
            .unwrap_or(&self.restapi.listen);
        format!("{scheme}://{address}/patroni")
    }
}
