//! The files and command lines PostgreSQL is configured with, as pure functions.
//!
//! Like Patroni, the agent owns `postgresql.conf`: `initdb`'s file becomes
//! `postgresql.base.conf`, and `postgresql.conf` includes it and then sets the configured
//! parameters (and, on a replica, `primary_conninfo` and `primary_slot_name`), so what the
//! agent wrote wins over what `initdb` wrote, and `ALTER SYSTEM` still wins over both. The
//! parameters that must agree between primary and replicas go on the `postgres` command
//! line instead, where neither file nor `ALTER SYSTEM` can change them.

use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The parameters Patroni passes on the command line, with its defaults (Patroni 3.0.2
/// `ConfigHandler.CMDLINE_OPTIONS`, for PostgreSQL 13 and later). `listen_addresses`,
/// `port` and `cluster_name` come from the agent's own settings.
pub const CMDLINE_DEFAULTS: [(&str, &str); 12] = [
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("max_connections", "100"),
    ("max_wal_senders", "10"),
    ("wal_keep_size", "128MB"),
    ("max_prepared_transactions", "0"),
    ("max_locks_per_transaction", "64"),
    ("track_commit_timestamp", "off"),
    ("max_replication_slots", "10"),
    ("max_worker_processes", "8"),
    // pg_rewind needs it, and it cannot be turned on without a restart.
    ("wal_log_hints", "on"),
    ("wal_keep_segments", ""),
];

/// Parameters Patroni never lets the configuration set: they are the agent's to decide.
const ALWAYS_CMDLINE: [&str; 3] = ["listen_addresses", "port", "cluster_name"];

/// Where a replica streams from, as written to `postgresql.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbySettings {
    /// `primary_conninfo`: a libpq key/value connection string (see [`Conninfo`]).
    pub primary_conninfo: String,
    /// `primary_slot_name`: the physical slot on the upstream (`None`: no slot).
    pub primary_slot_name: Option<String>,
}

/// The server's settings split as Patroni splits them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerParameters {
    /// `--name=value` arguments of `postgres`, in a stable order.
    pub cmdline: Vec<(String, String)>,
    /// Lines of `postgresql.conf`: the command-line settings first (the command line
    /// wins at start; written here too, as Patroni writes them, so that a changed value
    /// shows in `pg_settings.pending_restart` after a reload), then the others in the
    /// order configured.
    pub file: Vec<(String, String)>,
}

impl ServerParameters {
    /// Splits `parameters` (dynamic ones with local ones merged over them, as Patroni
    /// merges them) into command-line and file settings; `listen_addresses`, `port` and
    /// `cluster_name` are the agent's and override anything configured.
    ///
    /// `hba_file` and `ident_file` are dropped: the agent writes `pg_hba.conf` in the data
    /// directory and a setting pointing elsewhere would silently bypass it.
    #[must_use]
    pub fn split(
        parameters: &Map<String, Value>,
        listen_addresses: &str,
        port: u16,
        cluster_name: &str,
    ) -> Self {
        let mut cmdline = vec![
            ("listen_addresses".to_owned(), listen_addresses.to_owned()),
            ("port".to_owned(), port.to_string()),
            ("cluster_name".to_owned(), cluster_name.to_owned()),
        ];
        for (name, default) in CMDLINE_DEFAULTS {
            let value = parameters
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map_or_else(|| default.to_owned(), |(_, value)| guc_value(value));
            // wal_keep_segments is gone since PostgreSQL 13; a configured one is dropped
            // as Patroni drops it, since the server would refuse to start with it.
            if name != "wal_keep_segments" {
                cmdline.push((name.to_owned(), value));
            }
        }
        let configured = parameters
            .iter()
            .filter(|(key, _)| {
                let key = key.to_ascii_lowercase();
                !ALWAYS_CMDLINE.contains(&key.as_str())
                    && !CMDLINE_DEFAULTS.iter().any(|(name, _)| *name == key)
                    && !matches!(key.as_str(), "hba_file" | "ident_file")
                    // Written by the agent from the replica's upstream, never configured.
                    && !matches!(key.as_str(), "primary_conninfo" | "primary_slot_name")
            })
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), guc_value(value)));
        let file = cmdline.iter().cloned().chain(configured).collect();
        Self { cmdline, file }
    }

    /// The `postgres` arguments: `--name=value` each. They are passed through `pg_ctl -o`,
    /// which hands them to `/bin/sh`, so each is shell-quoted.
    #[must_use]
    pub fn cmdline_options(&self) -> String {
        self.cmdline
            .iter()
            .map(|(name, value)| shell_quote(&format!("--{name}={value}")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A parameter value as PostgreSQL reads it: booleans as `on`/`off`, numbers and strings
/// as written.
#[must_use]
pub fn guc_value(value: &Value) -> String {
    match value {
        Value::Bool(true) => "on".to_owned(),
        Value::Bool(false) => "off".to_owned(),
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `postgresql.conf` the agent writes: an include of `postgresql.base.conf`, then the
/// file parameters, then (on a replica) the standby settings.
#[must_use]
pub fn postgresql_conf(file: &[(String, String)], standby: Option<&StandbySettings>) -> String {
    let mut text = String::from(
        "# Do not edit this file manually!\n# It will be overwritten by ha-agent.\n\
         include 'postgresql.base.conf'\n\n",
    );
    for (name, value) in file {
        let _ = writeln!(text, "{name} = {}", conf_quote(value));
    }
    if let Some(standby) = standby {
        let _ = writeln!(
            text,
            "primary_conninfo = {}",
            conf_quote(&standby.primary_conninfo)
        );
        if let Some(slot) = &standby.primary_slot_name {
            let _ = writeln!(text, "primary_slot_name = {}", conf_quote(slot));
        }
    }
    text
}

/// The `pg_hba.conf` the agent writes: the configured lines, in order.
#[must_use]
pub fn pg_hba_conf(lines: &[String]) -> String {
    let mut text =
        String::from("# Do not edit this file manually!\n# It will be overwritten by ha-agent.\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// A value in `postgresql.conf` quotes: `'` doubled, `\` escaped.
#[must_use]
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// One word for `/bin/sh`, in single quotes.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A libpq key/value connection string, built in order (`host=... port=... user=...`).
///
/// Values are quoted as libpq requires, so a password with spaces or quotes survives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conninfo {
    pairs: Vec<(String, String)>,
}

impl Conninfo {
    /// An empty connection string.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection string to a member from its `conn_url`
    /// (`postgres://host:port/dbname`, as the member key carries it): `host`, `port` and
    /// `dbname`. `None` when it is not such a URL; credentials in it are ignored (the
    /// agent's own are added with [`with`](Self::with)).
    #[must_use]
    pub fn from_conn_url(url: &str) -> Option<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))?;
        let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
        let dbname = dbname.split('?').next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port: u16 = port.map_or(Some(5432), |port| port.parse().ok())?;
        let mut conninfo = Self::new()
            .with("host", host)
            .with("port", &port.to_string());
        if !dbname.is_empty() {
            conninfo = conninfo.with("dbname", dbname);
        }
        Some(conninfo)
    }

    /// Sets `key` (replacing an earlier value, keeping its place).
    #[must_use]
    pub fn with(mut self, key: &str, value: &str) -> Self {
        if let Some(pair) = self.pairs.iter_mut().find(|(k, _)| k == key) {
            value.clone_into(&mut pair.1);
        } else {
            self.pairs.push((key.to_owned(), value.to_owned()));
        }
        self
    }

    /// The value of `key`, if set.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The connection string with `password` left out, for logs and errors.
    #[must_use]
    pub fn redacted(&self) -> String {
        render(self.pairs.iter().filter(|(k, _)| k != "password"))
    }
}

impl std::fmt::Display for Conninfo {
    /// The full connection string, password included: only for PostgreSQL itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&render(self.pairs.iter()))
    }
}

fn render<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> String {
    pairs
        .map(|(key, value)| {
            if !value.is_empty()
                && !value
                    .chars()
                    .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
            {
                format!("{key}={value}")
            } else {
                format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                )
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(value: &Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn cmdline_parameters_come_with_patroni_defaults_and_the_agent_s_address() {
        let split = ServerParameters::split(
            &params(&json!({"max_connections": 200, "port": 1, "work_mem": "8MB"})),
            "127.0.0.1",
            5433,
            "batman",
        );
        let get = |name: &str| {
            split
                .cmdline
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("port"), Some("5433"), "the agent's port wins");
        assert_eq!(get("listen_addresses"), Some("127.0.0.1"));
        assert_eq!(get("cluster_name"), Some("batman"));
        assert_eq!(get("max_connections"), Some("200"));
        assert_eq!(get("wal_level"), Some("replica"));
        assert_eq!(get("wal_log_hints"), Some("on"));
        assert_eq!(get("wal_keep_segments"), None, "removed in PostgreSQL 13");
        assert_eq!(
            split.file.last(),
            Some(&("work_mem".to_owned(), "8MB".to_owned()))
        );
        assert_eq!(
            split.file[..split.cmdline.len()],
            split.cmdline[..],
            "the command-line settings are in the file too, first"
        );
    }

    #[test]
    fn configured_hba_file_and_recovery_target_are_not_written_to_the_file() {
        let split = ServerParameters::split(
            &params(&json!({"hba_file": "/etc/x", "primary_conninfo": "host=x",
                           "hot_standby": false, "log_line_prefix": "%m "})),
            "*",
            5432,
            "c",
        );
        assert_eq!(
            split.file[split.cmdline.len()..],
            [("log_line_prefix".to_owned(), "%m ".to_owned())]
        );
        assert!(
            split
                .cmdline
                .contains(&("hot_standby".to_owned(), "off".to_owned()))
        );
    }

    #[test]
    fn cmdline_options_survive_the_shell() {
        let split = ServerParameters {
            cmdline: vec![("cluster_name".to_owned(), "it's".to_owned())],
            file: vec![],
        };
        assert_eq!(split.cmdline_options(), r"'--cluster_name=it'\''s'");
    }

    #[test]
    fn postgresql_conf_includes_the_base_file_and_sets_the_standby() {
        let text = postgresql_conf(
            &[("work_mem".to_owned(), "it's".to_owned())],
            Some(&StandbySettings {
                primary_conninfo: "host=a user=r".to_owned(),
                primary_slot_name: Some("pg1".to_owned()),
            }),
        );
        assert!(text.contains("include 'postgresql.base.conf'\n"));
        assert!(text.contains("work_mem = 'it''s'\n"));
        assert!(text.contains("primary_conninfo = 'host=a user=r'\n"));
        assert!(text.contains("primary_slot_name = 'pg1'\n"));
        assert!(!postgresql_conf(&[], None).contains("primary_conninfo"));
    }

    #[test]
    fn pg_hba_conf_keeps_the_configured_lines_in_order() {
        let text = pg_hba_conf(&[
            "local all all trust".to_owned(),
            "host all all 0/0 md5".to_owned(),
        ]);
        assert!(text.ends_with("local all all trust\nhost all all 0/0 md5\n"));
    }

    #[test]
    fn conninfo_from_a_member_conn_url() {
        let conninfo = Conninfo::from_conn_url("postgres://10.0.0.1:5433/postgres").unwrap();
        assert_eq!(
            conninfo.to_string(),
            "host=10.0.0.1 port=5433 dbname=postgres"
        );
        let v6 = Conninfo::from_conn_url("postgresql://u@[::1]/db?sslmode=require").unwrap();
        assert_eq!(v6.to_string(), "host=::1 port=5432 dbname=db");
        assert_eq!(Conninfo::from_conn_url("http://x:1/"), None);
        assert_eq!(Conninfo::from_conn_url("postgres://x:port/"), None);
    }

    #[test]
    fn conninfo_quotes_awkward_values_and_redacts_the_password() {
        let conninfo = Conninfo::new()
            .with("user", "rep")
            .with("password", r"a b'\")
            .with("application_name", "");
        assert_eq!(
            conninfo.to_string(),
            r"user=rep password='a b\'\\' application_name=''"
        );
        assert_eq!(conninfo.redacted(), "user=rep application_name=''");
        assert_eq!(conninfo.with("user", "x").get("user"), Some("x"));
    }
}

/// The parameters the server runs with, merged as Patroni merges them: the dynamic
/// configuration's `postgresql.parameters` (`config` key), the local
/// `postgresql.parameters` over them, except that the command-line parameters
/// ([`CMDLINE_DEFAULTS`]) set in the dynamic configuration keep the dynamic value, since
/// they must be equal on every member.
#[must_use]
pub fn merged_parameters(
    dynamic: &dcs_core::model::ClusterConfig,
    local: &Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = dynamic
        .data
        .get("postgresql")
        .and_then(|pg| pg.get("parameters"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in local {
        let lower = key.to_ascii_lowercase();
        let cluster_wide = CMDLINE_DEFAULTS.iter().any(|(name, _)| *name == lower);
        if cluster_wide && merged.keys().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        merged.insert(key.clone(), value.clone());
    }
    merged
}

#[cfg(test)]
mod merge_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn local_parameters_win_except_cluster_wide_ones_set_in_the_dcs() {
        let dynamic = dcs_core::model::ClusterConfig::parse(
            br#"{"postgresql":{"parameters":{"max_connections":200,"work_mem":"4MB"}}}"#,
        );
        let local = json!({"max_connections": 50, "work_mem": "8MB", "max_wal_senders": 5});
        let merged = merged_parameters(&dynamic, local.as_object().unwrap());
        assert_eq!(merged["max_connections"], json!(200));
        assert_eq!(merged["work_mem"], json!("8MB"));
        assert_eq!(merged["max_wal_senders"], json!(5));
    }
}
