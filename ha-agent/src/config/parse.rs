//! From the YAML document to a checked [`Config`]: one walk that knows every key, its path
//! and what to do with it.

use std::path::PathBuf;

use dcs_core::model::ClusterConfig;
use dcs_core::{ClientOptions, ClusterPath};
use dcs_etcd::EtcdConfig;
use dcs_zk::ZooKeeperConfig;
use serde_json::{Map, Value};

use super::env::{AUTH_PARAMETERS, parse_bool};
use super::{
    Bootstrap, Config, ConfigError, Credentials, DcsConfig, HostPort, InitdbOption, Postgresql,
    RestApi, Tags, Warning, WarningKind, Watchdog, WatchdogMode,
};

/// The YAML text as a JSON-like tree (the form `bootstrap.dcs` is written to the DCS in).
pub(super) fn document(text: &str) -> Result<Map<String, Value>, ConfigError> {
    let value: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Syntax {
        message: e.to_string(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        // An empty file: every required key will be reported missing.
        Value::Null => Ok(Map::new()),
        other => Err(ConfigError::Invalid {
            path: "(document)".to_owned(),
            value: describe(&other),
            expected: "a mapping of keys to values".to_owned(),
        }),
    }
}

/// What is done with a key of a section.
enum Key {
    /// Read by the walker.
    Known,
    /// A Patroni key ignored with a warning saying this.
    Ignored(&'static str),
    /// A Patroni key refused, for this reason.
    Refused(&'static str),
}

struct Walk {
    warnings: Vec<Warning>,
}

impl Walk {
    fn warn(&mut self, kind: WarningKind, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning::new(kind, path, message));
    }

    /// Checks every key of `map` against `rule`; unknown keys are warned about when
    /// `warn_unknown`.
    fn keys(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        warn_unknown: bool,
        rule: impl Fn(&str) -> Option<Key>,
    ) -> Result<(), ConfigError> {
        for (key, value) in map {
            let full = join(path, key);
            match rule(key) {
                Some(Key::Known) => {}
                // A null is an absent key (Patroni's patch_config removes it).
                Some(_) if value.is_null() => {}
                Some(Key::Ignored(why)) => self.warn(WarningKind::Ignored, full, why),
                Some(Key::Refused(why)) => {
                    return Err(ConfigError::Unsupported {
                        path: full,
                        reason: why.to_owned(),
                    });
                }
                None if warn_unknown => self.warn(
                    WarningKind::UnknownKey,
                    full,
                    "unknown key (a typo?); ignored",
                ),
                None => {}
            }
        }
        Ok(())
    }
}

pub(super) fn config(raw: Map<String, Value>) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut walk = Walk {
        warnings: Vec::new(),
    };
    walk.keys(&raw, "", true, |key| {
        Some(match key {
            "scope" | "name" | "namespace" | "restapi" | "bootstrap" | "postgresql" | "tags"
            | "watchdog" | "etcd3" | "zookeeper" | "etcd" | "consul" | "kubernetes" | "raft"
            | "exhibitor" => Key::Known,
            "log" => Key::Ignored("the agent logs to stderr; RUST_LOG sets the level"),
            "ctl" => Key::Ignored("used by patronictl, not by the agent"),
            "thread_pool_size" | "thread_stack_size" => {
                Key::Ignored("a Python runtime setting; the agent has no use for it")
            }
            "citus" => Key::Refused(
                "a Citus cluster needs coordinator/worker registration the agent does not do",
            ),
            _ => return None,
        })
    })?;

    let scope = required_string(&raw, "", "scope")?;
    ClusterPath::new(&scope).map_err(|_| ConfigError::Invalid {
        path: "scope".to_owned(),
        value: quote(&scope),
        expected: "a non-empty name without '/'".to_owned(),
    })?;
    let name = required_string(&raw, "", "name")?;
    ClientOptions::new(ClusterPath::new(&scope).expect("checked above"), &name).map_err(|_| {
        ConfigError::Invalid {
            path: "name".to_owned(),
            value: quote(&name),
            expected: "a non-empty name without '/'".to_owned(),
        }
    })?;
    let namespace = optional_string(&raw, "", "namespace")?
        .unwrap_or_else(|| dcs_core::options::DEFAULT_NAMESPACE.to_owned());

    let dcs = dcs(&mut walk, &raw)?;
    let restapi = restapi(&mut walk, &raw)?;
    let bootstrap = bootstrap(&mut walk, &raw)?;
    let postgresql = postgresql(&mut walk, &raw)?;
    let tags = tags(&mut walk, &raw)?;
    let watchdog = watchdog(&mut walk, &raw)?;

    let config = Config {
        scope,
        name,
        namespace,
        restapi,
        dcs,
        bootstrap,
        postgresql,
        tags,
        watchdog,
        raw,
    };
    Ok((config, walk.warnings))
}

fn dcs(walk: &mut Walk, raw: &Map<String, Value>) -> Result<DcsConfig, ConfigError> {
    const SECTIONS: [&str; 7] = [
        "etcd3",
        "zookeeper",
        "etcd",
        "consul",
        "kubernetes",
        "raft",
        "exhibitor",
    ];
    let present: Vec<&str> = SECTIONS
        .into_iter()
        .filter(|s| raw.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    let section = match present.as_slice() {
        [] => return Err(ConfigError::NoDcs),
        [one] => *one,
        several => {
            return Err(ConfigError::SeveralDcs {
                sections: several.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    };
    let reason = match section {
        "etcd" => {
            "the etcd v2 API is not implemented; if your etcd serves v3 (3.4+ does by \
             default), rename the section to etcd3"
        }
        "consul" | "kubernetes" | "exhibitor" => {
            "this DCS is not implemented; use etcd3 or zookeeper"
        }
        "raft" => "Patroni's built-in Raft is not implemented; use etcd3 or zookeeper",
        _ => "",
    };
    if !reason.is_empty() {
        return Err(ConfigError::Unsupported {
            path: section.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let map = section_map(raw, "", section)?.expect("present");
    if section == "etcd3" {
        etcd3(walk, map).map(DcsConfig::Etcd3)
    } else {
        zookeeper(walk, map).map(DcsConfig::ZooKeeper)
    }
}

fn dcs_error(section: &str, error: &dyn std::fmt::Display) -> ConfigError {
    ConfigError::Dcs {
        path: section.to_owned(),
        message: error.to_string(),
    }
}

fn etcd3(walk: &mut Walk, map: &Map<String, Value>) -> Result<EtcdConfig, ConfigError> {
    let section = "etcd3";
    let known = [
        "host", "hosts", "port", "url", "protocol", "username", "password", "cacert", "cert",
        "key", "proxy", "srv",
    ];
    walk.keys(map, section, true, |key| {
        if known.contains(&key) {
            Some(Key::Known)
        } else {
            match key {
                "use_proxies" => Some(Key::Ignored(
                    "the agent always uses the listed hosts, never discovered ones",
                )),
                "srv_suffix" => Some(Key::Ignored("only meaningful with srv")),
                _ => None,
            }
        }
    })?;
    let config: EtcdConfig = serde_json::from_value(Value::Object(only(map, &known)))
        .map_err(|e| dcs_error(section, &e))?;
    config
        .endpoints()
        .map_err(|e| dcs_error(section, &backend_message(&e)))?;
    config
        .credentials()
        .map_err(|e| dcs_error(section, &backend_message(&e)))?;
    Ok(config)
}

fn zookeeper(walk: &mut Walk, map: &Map<String, Value>) -> Result<ZooKeeperConfig, ConfigError> {
    let section = "zookeeper";
    let known = [
        "hosts",
        "use_ssl",
        "cacert",
        "cert",
        "key",
        "key_password",
        "verify",
        "auth_data",
        "set_acls",
    ];
    walk.keys(map, section, true, |key| {
        known.contains(&key).then_some(Key::Known)
    })?;
    if map.get("hosts").is_none_or(Value::is_null) {
        return Err(ConfigError::Missing {
            path: "zookeeper.hosts".to_owned(),
        });
    }
    let mut map = only(map, &known);
    // `PATRONI_ZOOKEEPER_USE_SSL=true` arrives as a string; Patroni takes it by
    // truthiness, which would make "false" true, so it is read as a boolean here.
    for key in ["use_ssl", "verify"] {
        if let Some(value) = map.get_mut(key) {
            *value = Value::Bool(bool_value(value, &join(section, key))?);
        }
    }
    let config: ZooKeeperConfig =
        serde_json::from_value(Value::Object(map)).map_err(|e| dcs_error(section, &e))?;
    config
        .check()
        .map_err(|e| dcs_error(section, &backend_message(&e)))?;
    Ok(config)
}

fn restapi(walk: &mut Walk, raw: &Map<String, Value>) -> Result<RestApi, ConfigError> {
    let path = "restapi";
    let Some(map) = section_map(raw, "", path)? else {
        return Err(ConfigError::Missing {
            path: "restapi.listen".to_owned(),
        });
    };
    walk.keys(map, path, true, |key| {
        Some(match key {
            "listen"
            | "connect_address"
            | "authentication"
            | "certfile"
            | "keyfile"
            | "keyfile_password"
            | "cafile"
            | "verify_client"
            | "allowlist"
            | "allowlist_include_members" => Key::Known,
            "ciphers" => Key::Ignored("the TLS library's default cipher suites are used"),
            "http_extra_headers" | "https_extra_headers" | "server_tokens" => {
                Key::Ignored("custom response headers are not implemented")
            }
            "request_queue_size" | "thread_pool_size" => {
                Key::Ignored("the agent's server sizes itself")
            }
            _ => return None,
        })
    })?;
    let listen = required_host_port(map, path, "listen", HostRule::MayBeEmpty)?;
    let connect_address = optional_host_port(map, path, "connect_address", HostRule::Single)?;
    let authentication = match section_map(map, path, "authentication")? {
        Some(auth) => Some(credentials(walk, auth, "restapi.authentication", false)?),
        None => None,
    };
    let verify_client = optional_string(map, path, "verify_client")?;
    if let Some(mode) = &verify_client {
        if !matches!(mode.as_str(), "none" | "optional" | "required") {
            return Err(ConfigError::Invalid {
                path: join(path, "verify_client"),
                value: quote(mode),
                expected: "none, optional or required".to_owned(),
            });
        }
    }
    let allowlist = match map.get("allowlist") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => string_list(value, &join(path, "allowlist"))?,
    };
    Ok(RestApi {
        listen,
        connect_address,
        authentication,
        certfile: optional_string(map, path, "certfile")?.map(PathBuf::from),
        keyfile: optional_string(map, path, "keyfile")?.map(PathBuf::from),
        keyfile_password: optional_string(map, path, "keyfile_password")?,
        cafile: optional_string(map, path, "cafile")?.map(PathBuf::from),
        verify_client,
        allowlist,
        allowlist_include_members: optional_bool(map, path, "allowlist_include_members")?
            .unwrap_or(false),
    })
}

fn bootstrap(walk: &mut Walk, raw: &Map<String, Value>) -> Result<Bootstrap, ConfigError> {
    let path = "bootstrap";
    let empty = Map::new();
    let map = section_map(raw, "", path)?.unwrap_or(&empty);
    let method = optional_string(map, path, "method")?;
    if method.as_deref().is_some_and(|m| m != "initdb") {
        return Err(ConfigError::Unsupported {
            path: join(path, "method"),
            reason: "custom bootstrap methods are not implemented; ignoring one would \
                     create an empty cluster instead of the one asked for"
                .to_owned(),
        });
    }
    walk.keys(map, path, true, |key| {
        Some(match key {
            "dcs" | "initdb" | "pg_hba" | "method" => Key::Known,
            "users" => Key::Ignored(
                "creating users at bootstrap is not implemented (Patroni 4 dropped it too); \
                 create them after bootstrap",
            ),
            "post_bootstrap" | "post_init" => {
                Key::Ignored("post-bootstrap scripts are not implemented yet; run it by hand")
            }
            _ => return None,
        })
    })?;
    let dcs = match section_map(map, path, "dcs")? {
        Some(dcs) => dynamic(walk, dcs)?,
        None => ClusterConfig {
            data: Map::new(),
            valid: true,
        },
    };
    let initdb = match map.get("initdb") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => initdb(value, "bootstrap.initdb")?,
    };
    let pg_hba = match map.get("pg_hba") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => string_list(value, "bootstrap.pg_hba")?,
    };
    Ok(Bootstrap {
        dcs,
        initdb,
        pg_hba,
    })
}

/// `bootstrap.dcs`: kept whole for the DCS, its settings the agent acts on checked.
fn dynamic(walk: &mut Walk, map: &Map<String, Value>) -> Result<ClusterConfig, ConfigError> {
    let path = "bootstrap.dcs";
    let mut given = [None; 3];
    for (slot, key) in given.iter_mut().zip(["ttl", "loop_wait", "retry_timeout"]) {
        *slot = optional_int(map, path, key)?;
    }
    optional_int(map, path, "maximum_lag_on_failover")?;
    if let Some(mode) = map.get("synchronous_mode").filter(|v| !v.is_null()) {
        let on = match mode {
            Value::String(s) if s.eq_ignore_ascii_case("quorum") => true,
            other => bool_value(other, &join(path, "synchronous_mode"))?,
        };
        if on {
            return Err(ConfigError::Unsupported {
                path: join(path, "synchronous_mode"),
                reason: "synchronous replication is not implemented; ignoring it would lose \
                         the guarantee that a committed transaction survives a failover"
                    .to_owned(),
            });
        }
    }
    if let Some(strict) = map.get("synchronous_mode_strict").filter(|v| !v.is_null()) {
        if bool_value(strict, &join(path, "synchronous_mode_strict"))? {
            return Err(ConfigError::Unsupported {
                path: join(path, "synchronous_mode_strict"),
                reason: "synchronous replication is not implemented".to_owned(),
            });
        }
    }
    let config = ClusterConfig {
        data: map.clone(),
        valid: true,
    };
    if config.is_standby_cluster() {
        return Err(ConfigError::Unsupported {
            path: join(path, "standby_cluster"),
            reason: "standby clusters are not implemented; ignoring it would start an \
                     independent primary instead of a replica of the remote cluster"
                .to_owned(),
        });
    }
    if let Some(postgresql) = section_map(map, path, "postgresql")? {
        let inner = "bootstrap.dcs.postgresql";
        optional_bool(postgresql, inner, "use_pg_rewind")?;
        optional_bool(postgresql, inner, "use_slots")?;
        if let Some(parameters) = section_map(postgresql, inner, "parameters")? {
            check_parameters(parameters, &join(inner, "parameters"))?;
        }
    }
    if config.failsafe_mode() {
        walk.warn(
            WarningKind::Ignored,
            join(path, "failsafe_mode"),
            "failsafe mode is not implemented: a primary that loses the DCS demotes",
        );
    }
    let effective = [config.ttl(), config.loop_wait(), config.retry_timeout()];
    for ((key, given), effective) in ["ttl", "loop_wait", "retry_timeout"]
        .into_iter()
        .zip(given)
        .zip(effective)
    {
        let differs = match given {
            Some(given) => given != i64::try_from(effective).unwrap_or(i64::MAX),
            None => effective != default_timing(key),
        };
        if differs {
            walk.warn(
                WarningKind::Adjusted,
                join(path, key),
                format!(
                    "{} becomes {effective} so that ttl >= 7, loop_wait >= 1, \
                     retry_timeout >= 3 and loop_wait + 2 * retry_timeout <= ttl \
                     (effective: ttl {}, loop_wait {}, retry_timeout {}), as Patroni 4 adjusts them",
                    given.map_or_else(|| "the default".to_owned(), |g| g.to_string()),
                    config.ttl(),
                    config.loop_wait(),
                    config.retry_timeout()
                ),
            );
        }
    }
    Ok(config)
}

fn default_timing(key: &str) -> u64 {
    if key == "ttl" { 30 } else { 10 }
}

fn initdb(value: &Value, path: &str) -> Result<Vec<InitdbOption>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(invalid(path, value, "a list of options"));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match item {
            Value::String(flag) if !flag.is_empty() => out.push(InitdbOption::Flag(flag.clone())),
            Value::Object(map) if map.len() == 1 => {
                let (key, value) = map.iter().next().expect("one entry");
                let value = scalar_string(value)
                    .ok_or_else(|| invalid(&join(&at, key), value, "a string or a number"))?;
                out.push(InitdbOption::Value(key.clone(), value));
            }
            other => {
                return Err(invalid(
                    &at,
                    other,
                    "an option name or a single `name: value` mapping",
                ));
            }
        }
    }
    Ok(out)
}

fn postgresql(walk: &mut Walk, raw: &Map<String, Value>) -> Result<Postgresql, ConfigError> {
    let path = "postgresql";
    let Some(map) = section_map(raw, "", path)? else {
        return Err(ConfigError::Missing {
            path: "postgresql.data_dir".to_owned(),
        });
    };
    walk.keys(map, path, true, |key| {
        Some(match key {
            "listen" | "connect_address" | "data_dir" | "config_dir" | "bin_dir" | "pgpass"
            | "database" | "authentication" | "parameters" | "pg_hba" | "use_pg_rewind"
            | "pg_ctl_timeout" | "callbacks" | "pre_promote" | "before_stop" => Key::Known,
            "proxy_address" => Key::Ignored("not advertised in the member key yet"),
            "use_slots" => Key::Ignored(
                "replication slots are enabled or disabled cluster-wide, in bootstrap.dcs \
                 (Patroni ignores it here too)",
            ),
            "bin_name" => Key::Ignored("the standard binary names in bin_dir are used"),
            "create_replica_methods" | "basebackup" | "replica_method" => {
                Key::Ignored("new replicas are always cloned with pg_basebackup")
            }
            "pg_ident"
            | "custom_conf"
            | "recovery_conf"
            | "krbsrvname"
            | "use_unix_socket"
            | "use_unix_socket_repl"
            | "remove_data_directory_on_rewind_failure"
            | "remove_data_directory_on_diverged_timelines"
            | "rewind" => Key::Ignored("not implemented yet"),
            _ => return None,
        })
    })?;
    let listen = required_host_port(map, path, "listen", HostRule::List)?;
    let connect_address = required_host_port(map, path, "connect_address", HostRule::Single)?;
    let data_dir = PathBuf::from(required_string(map, path, "data_dir")?);
    let (superuser, replication, rewind) = authentication(walk, map)?;
    let parameters = match section_map(map, path, "parameters")? {
        Some(parameters) => {
            check_parameters(parameters, "postgresql.parameters")?;
            parameters.clone()
        }
        None => Map::new(),
    };
    let pg_hba = match map.get("pg_hba") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => string_list(value, "postgresql.pg_hba")?,
    };
    let pg_ctl_timeout = optional_int(map, path, "pg_ctl_timeout")?
        .map(|t| {
            u64::try_from(t).ok().filter(|t| *t > 0).ok_or_else(|| {
                invalid(
                    &join(path, "pg_ctl_timeout"),
                    &Value::from(t),
                    "a positive number of seconds",
                )
            })
        })
        .transpose()?
        .unwrap_or(60);
    Ok(Postgresql {
        listen,
        connect_address,
        data_dir,
        config_dir: optional_string(map, path, "config_dir")?.map(PathBuf::from),
        bin_dir: optional_string(map, path, "bin_dir")?.map(PathBuf::from),
        pgpass: optional_string(map, path, "pgpass")?.map(PathBuf::from),
        database: optional_string(map, path, "database")?.unwrap_or_else(|| "postgres".to_owned()),
        superuser,
        replication,
        rewind,
        parameters,
        pg_hba,
        use_pg_rewind: optional_bool(map, path, "use_pg_rewind")?,
        pg_ctl_timeout,
        pre_promote: command_line(map, path, "pre_promote")?,
        before_stop: command_line(map, path, "before_stop")?,
        callbacks: callbacks(walk, map)?,
    })
}

/// `postgresql.callbacks`: a command line per known callback; each must split into words
/// as Patroni's `shlex.split` would.
fn callbacks(
    walk: &mut Walk,
    map: &Map<String, Value>,
) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let path = "postgresql.callbacks";
    let Some(section) = section_map(map, "postgresql", "callbacks")? else {
        return Ok(std::collections::BTreeMap::new());
    };
    walk.keys(section, path, true, |key| {
        matches!(
            key,
            "on_start" | "on_stop" | "on_restart" | "on_reload" | "on_role_change"
        )
        .then_some(Key::Known)
    })?;
    let mut callbacks = std::collections::BTreeMap::new();
    for key in [
        "on_start",
        "on_stop",
        "on_restart",
        "on_reload",
        "on_role_change",
    ] {
        if let Some(line) = command_line(section, path, key)? {
            callbacks.insert(key.to_owned(), line);
        }
    }
    Ok(callbacks)
}

/// An optional command line that must split into words as `shlex.split` would.
fn command_line(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(line) = optional_string(map, path, key)? else {
        return Ok(None);
    };
    if super::split_command(&line).is_none_or(|words| words.is_empty()) {
        return Err(invalid(
            &join(path, key),
            &Value::from(line),
            "a command line (balanced quotes, not empty)",
        ));
    }
    Ok(Some(line))
}

/// `postgresql.authentication`: superuser and replication required, rewind optional.
fn authentication(
    walk: &mut Walk,
    map: &Map<String, Value>,
) -> Result<(Credentials, Credentials, Option<Credentials>), ConfigError> {
    let path = "postgresql";
    let Some(auth) = section_map(map, path, "authentication")? else {
        return Err(ConfigError::Missing {
            path: "postgresql.authentication.superuser".to_owned(),
        });
    };
    let auth_path = "postgresql.authentication";
    walk.keys(auth, auth_path, true, |key| {
        matches!(key, "superuser" | "replication" | "rewind").then_some(Key::Known)
    })?;
    let user = |walk: &mut Walk, key: &str| -> Result<Option<Credentials>, ConfigError> {
        match section_map(auth, auth_path, key)? {
            Some(section) => Ok(Some(credentials(
                walk,
                section,
                &join(auth_path, key),
                true,
            )?)),
            None => Ok(None),
        }
    };
    let superuser = user(walk, "superuser")?.ok_or_else(|| ConfigError::Missing {
        path: "postgresql.authentication.superuser".to_owned(),
    })?;
    let replication = user(walk, "replication")?.ok_or_else(|| ConfigError::Missing {
        path: "postgresql.authentication.replication".to_owned(),
    })?;
    let rewind = user(walk, "rewind")?;
    Ok((superuser, replication, rewind))
}

/// PostgreSQL parameters are written to `postgresql.conf`: scalars only.
fn check_parameters(map: &Map<String, Value>, path: &str) -> Result<(), ConfigError> {
    for (key, value) in map {
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            return Err(invalid(
                &join(path, key),
                value,
                "a string, number or boolean",
            ));
        }
    }
    Ok(())
}

fn credentials(
    walk: &mut Walk,
    map: &Map<String, Value>,
    path: &str,
    libpq_options: bool,
) -> Result<Credentials, ConfigError> {
    // The libpq options after `username` and `password`, as the environment may set them.
    let libpq = &AUTH_PARAMETERS[2..];
    walk.keys(map, path, true, |key| {
        (key == "username" || key == "password" || libpq_options && libpq.contains(&key))
            .then_some(Key::Known)
    })?;
    let username = required_string(map, path, "username")?;
    let password = match map.get("password") {
        None | Some(Value::Null) => None,
        // Never echo a password back in a message.
        Some(value) => Some(scalar_string(value).ok_or_else(|| ConfigError::Invalid {
            path: join(path, "password"),
            value: "the value".to_owned(),
            expected: "a string".to_owned(),
        })?),
    };
    let mut options = Vec::new();
    if libpq_options {
        for (key, value) in map {
            if libpq.contains(&key.as_str()) && !value.is_null() {
                let text = scalar_string(value)
                    .ok_or_else(|| invalid(&join(path, key), value, "a string"))?;
                options.push((key.clone(), text));
            }
        }
    }
    Ok(Credentials {
        username,
        password,
        options,
    })
}

fn tags(walk: &mut Walk, raw: &Map<String, Value>) -> Result<Tags, ConfigError> {
    let path = "tags";
    let empty = Map::new();
    let map = section_map(raw, "", path)?.unwrap_or(&empty);
    // Custom tags are a Patroni feature, so unknown keys are not warned about.
    walk.keys(map, path, false, |key| {
        Some(match key {
            "replicatefrom" => Key::Ignored(
                "cascading replication is not implemented; this member replicates from the \
                 leader",
            ),
            "nostream" => Key::Ignored("WAL-archive-only replicas are not implemented"),
            "sync_priority" => Key::Ignored("synchronous replication is not implemented"),
            _ => return None,
        })
    })?;
    let nofailover = optional_bool(map, path, "nofailover")?;
    let mut failover_priority = optional_int(map, path, "failover_priority")?;
    if let (Some(nofailover), Some(priority)) = (nofailover, failover_priority) {
        if nofailover == (priority > 0) {
            // Patroni 4: nofailover wins over a conflicting failover_priority.
            walk.warn(
                WarningKind::Adjusted,
                join(path, "failover_priority"),
                format!(
                    "{priority} conflicts with nofailover: {nofailover}; nofailover wins, as \
                     in Patroni"
                ),
            );
            failover_priority = if nofailover { Some(0) } else { None };
        }
    }
    Ok(Tags {
        nofailover: nofailover.unwrap_or(false),
        failover_priority,
        noloadbalance: optional_bool(map, path, "noloadbalance")?.unwrap_or(false),
        clonefrom: optional_bool(map, path, "clonefrom")?.unwrap_or(false),
        nosync: optional_bool(map, path, "nosync")?.unwrap_or(false),
        all: map.clone(),
    })
}

fn watchdog(walk: &mut Walk, raw: &Map<String, Value>) -> Result<Watchdog, ConfigError> {
    let path = "watchdog";
    let Some(map) = section_map(raw, "", path)? else {
        return Ok(Watchdog::default());
    };
    walk.keys(map, path, true, |key| {
        Some(match key {
            "mode" | "device" | "safety_margin" => Key::Known,
            "driver" => Key::Ignored("only the Linux default driver is planned"),
            _ => return None,
        })
    })?;
    // PyYAML reads a bare `off` as false, which Patroni takes as mode off.
    let mode = match map.get("mode") {
        None | Some(Value::Null) => "automatic".to_owned(),
        Some(Value::Bool(false)) => "off".to_owned(),
        Some(value) => scalar_string(value)
            .ok_or_else(|| invalid("watchdog.mode", value, "off, automatic or required"))?
            .to_lowercase(),
    };
    let mode = match mode.as_str() {
        "off" => WatchdogMode::Off,
        "automatic" => {
            walk.warn(
                WarningKind::Ignored,
                "watchdog.mode",
                "the agent has no watchdog support yet and runs without one, as Patroni does \
                 on a host without a watchdog device",
            );
            WatchdogMode::Automatic
        }
        "required" => {
            return Err(ConfigError::Unsupported {
                path: "watchdog.mode".to_owned(),
                reason: "the agent has no watchdog support yet; `required` forbids running \
                         without one"
                    .to_owned(),
            });
        }
        _ => {
            return Err(invalid(
                "watchdog.mode",
                &Value::String(mode),
                "off, automatic or required",
            ));
        }
    };
    let safety_margin = optional_int(map, path, "safety_margin")?
        .map(|m| {
            u64::try_from(m).map_err(|_| {
                invalid(
                    "watchdog.safety_margin",
                    &Value::from(m),
                    "a number of seconds",
                )
            })
        })
        .transpose()?;
    Ok(Watchdog {
        mode,
        device: optional_string(map, path, "device")?.map(PathBuf::from),
        safety_margin,
    })
}

// ---- values -------------------------------------------------------------------------

/// A backend's message without the generic "invalid configuration: " its `Display` adds.
fn backend_message(error: &dcs_core::Error) -> String {
    match error {
        dcs_core::Error::InvalidConfig(message) => message.clone(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// A value as a message shows it: JSON, shortened.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

fn invalid(path: &str, value: &Value, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        value: describe(value),
        expected: expected.to_owned(),
    }
}

/// A section that must be a mapping when present; `None` when absent or null.
fn section_map<'a>(
    map: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(invalid(&join(path, key), other, "a mapping")),
    }
}

/// Strings, numbers and booleans as text, as Python's `str()` would give them (`PyYAML`
/// reads `port: 5432` or `password: 1234` as numbers).
fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        _ => None,
    }
}

fn optional_string(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ (Value::String(_) | Value::Number(_))) => Ok(scalar_string(value)),
        Some(other) => Err(invalid(&join(path, key), other, "a string")),
    }
}

fn required_string(map: &Map<String, Value>, path: &str, key: &str) -> Result<String, ConfigError> {
    optional_string(map, path, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::Missing {
            path: join(path, key),
        })
}

fn bool_value(value: &Value, path: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_bool(s).ok_or_else(|| invalid(path, value, "a boolean")),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        other => Err(invalid(path, other, "a boolean")),
    }
}

fn optional_bool(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<bool>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => bool_value(value, &join(path, key)).map(Some),
    }
}

/// An integer, or a string holding one (Patroni reads these with `int()`).
fn optional_int(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<i64>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(value @ Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| invalid(&join(path, key), value, "an integer")),
        Some(other) => Err(invalid(&join(path, key), other, "an integer")),
    }
}

fn string_list(value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    let Value::Array(items) = value else {
        return Err(invalid(path, value, "a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(invalid(&format!("{path}[{i}]"), other, "a string")),
        })
        .collect()
}

/// The form of the host in a `host:port` value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostRule {
    /// One host, required (`connect_address`).
    Single,
    /// One host, or empty for every interface (`restapi.listen`).
    MayBeEmpty,
    /// Hosts separated by commas, or `*` (`postgresql.listen`).
    List,
}

fn optional_host_port(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
    rule: HostRule,
) -> Result<Option<HostPort>, ConfigError> {
    let Some(text) = optional_string(map, path, key)? else {
        return Ok(None);
    };
    host_port(&text, rule)
        .map(Some)
        .ok_or_else(|| ConfigError::Invalid {
            path: join(path, key),
            value: quote(&text),
            expected: "host:port".to_owned(),
        })
}

fn required_host_port(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
    rule: HostRule,
) -> Result<HostPort, ConfigError> {
    optional_host_port(map, path, key, rule)?.ok_or_else(|| ConfigError::Missing {
        path: join(path, key),
    })
}

/// `host:port` as Patroni splits it (at the last `:`), IPv6 brackets removed.
fn host_port(text: &str, rule: HostRule) -> Option<HostPort> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bad_char = |c: char| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']' | '?' | '#');
    if host.chars().any(bad_char) {
        return None;
    }
    let ok = match rule {
        HostRule::Single => !host.is_empty() && !host.contains(',') && host != "*",
        HostRule::MayBeEmpty => !host.contains(','),
        HostRule::List => !host.is_empty() && host.split(',').all(|h| !h.trim().is_empty()),
    };
    ok.then(|| HostPort {
        host: host.to_owned(),
        port,
    })
}

/// `map` restricted to `keys`: what a backend's strict deserializer is given once the
/// other keys were warned about.
fn only(map: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    map.iter()
        .filter(|(k, v)| keys.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits_at_the_last_colon_as_patroni_does() {
        let ok = [
            ("127.0.0.1:5432", HostRule::Single, "127.0.0.1", 5432),
            ("[::1]:5432", HostRule::Single, "::1", 5432),
            ("db.example:6543", HostRule::Single, "db.example", 6543),
            (":8008", HostRule::MayBeEmpty, "", 8008),
            ("*:5432", HostRule::List, "*", 5432),
            (
                "127.0.0.1,10.0.0.1:5432",
                HostRule::List,
                "127.0.0.1,10.0.0.1",
                5432,
            ),
        ];
        for (text, rule, host, port) in ok {
            let parsed = host_port(text, rule).unwrap_or_else(|| panic!("{text}"));
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{text}");
        }
        assert_eq!(
            host_port("[::1]:5432", HostRule::Single)
                .unwrap()
                .to_string(),
            "[::1]:5432"
        );
        let bad = [
            ("abc", HostRule::List),
            ("a:0", HostRule::Single),
            ("a:65536", HostRule::Single),
            (":5432", HostRule::Single),
            ("*:5432", HostRule::Single),
            ("a,b:5432", HostRule::Single),
            ("a,,b:5432", HostRule::List),
            ("http://a:1", HostRule::Single),
            ("a b:1", HostRule::Single),
        ];
        for (text, rule) in bad {
            assert!(host_port(text, rule).is_none(), "{text}");
        }
    }

    #[test]
    fn yaml_spellings_reach_postgres_as_written() {
        // YAML 1.2 reads `on` and `0700` as strings; postgresql.conf gets them verbatim,
        // which PostgreSQL reads as PyYAML-based Patroni meant them (on, octal 0700).
        let doc = document("a: on\nb: 0700\nc: yes\nd: 1\nd: 2").unwrap();
        assert_eq!(doc["a"], "on");
        assert_eq!(doc["b"], "0700");
        assert!(bool_value(&doc["c"], "c").unwrap());
        // A repeated key keeps the last value, as in PyYAML.
        assert_eq!(doc["d"], 2);
    }
}
