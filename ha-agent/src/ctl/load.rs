//! Where ctl finds its cluster: the configuration file (a Patroni member configuration,
//! or patronictl's short `patronictl.yaml` with little more than the DCS section),
//! `--dcs-url`, and the cluster name given on the command line.

use std::path::{Path, PathBuf};

use dcs_core::ClusterPath;
use serde_json::{Map, Value};

use crate::config::{Config, Credentials};

/// The configuration ctl works from, before a cluster name is chosen.
#[derive(Clone, Debug)]
pub(crate) struct CtlConfig {
    /// The document as read, `--dcs-url` applied, member-only keys filled in.
    raw: Map<String, Value>,
    /// Credentials for the members' REST APIs: `ctl.authentication`, else
    /// `restapi.authentication`.
    pub(crate) auth: Option<Credentials>,
    /// `scope`, when the configuration names one.
    pub(crate) scope: Option<String>,
}

/// patronictl's default configuration file: `$XDG_CONFIG_HOME/patroni/patronictl.yaml`,
/// else `~/.config/patroni/patronictl.yaml`.
pub(crate) fn default_config_file(vars: &[(String, String)]) -> Option<PathBuf> {
    let var = |name: &str| {
        vars.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    };
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(base.join("patroni").join("patronictl.yaml"))
}

impl CtlConfig {
    /// Reads `file` (`explicit`: named by `-c` or `PATRONICTL_CONFIG_FILE`, so it must
    /// exist; else the default, which may be absent) and applies `dcs_url`.
    pub(crate) fn load(
        file: Option<&Path>,
        explicit: bool,
        dcs_url: Option<&str>,
        vars: &[(String, String)],
    ) -> Result<Self, String> {
        let mut raw = match file {
            Some(path) if path.is_file() => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "Provided config file {} not existing or no read rights. Check the \
                         -c/--config-file parameter ({e})",
                        path.display()
                    )
                })?;
                document(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Some(path) if explicit => {
                return Err(format!(
                    "Provided config file {} not existing or no read rights. Check the \
                     -c/--config-file parameter",
                    path.display()
                ));
            }
            _ => Map::new(),
        };
        if let Some(url) = dcs_url {
            let (section, value) = parse_dcs_url(url)?;
            for name in [
                "etcd3",
                "etcd",
                "zookeeper",
                "consul",
                "kubernetes",
                "raft",
                "exhibitor",
            ] {
                raw.remove(name);
            }
            if let Some(namespace) = value.get("namespace").cloned() {
                raw.insert("namespace".to_owned(), namespace);
            }
            let mut value = value;
            value.remove("namespace");
            raw.insert(section.to_owned(), Value::Object(value));
        }
        let auth = ctl_auth(&raw, vars);
        let scope = vars
            .iter()
            .find(|(k, v)| k == "PATRONI_SCOPE" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .or_else(|| raw.get("scope").and_then(Value::as_str).map(str::to_owned));
        fill_member_keys(&mut raw);
        Ok(Self { raw, auth, scope })
    }

    /// The checked [`Config`] for cluster `name` (the configuration's `scope` when
    /// `None`), with the environment's `PATRONI_*` variables applied as the agent applies
    /// them, and the REST credentials to use.
    pub(crate) fn for_cluster(
        &self,
        name: Option<&str>,
        vars: &[(String, String)],
    ) -> Result<(Config, Option<Credentials>), String> {
        let scope = name
            .map(str::to_owned)
            .or_else(|| self.scope.clone())
            .ok_or(
                "no cluster name: give one on the command line or set scope in the configuration",
            )?;
        let mut raw = self.raw.clone();
        raw.insert("scope".to_owned(), Value::from(scope.as_str()));
        let text = serde_json::to_string(&raw).expect("a JSON map always serializes");
        let (mut config, _warnings) = Config::from_yaml_str_with_env(&text, vars.iter().cloned())
            .map_err(|e| format!("invalid configuration: {e}"))?;
        // The cluster named on the command line wins over PATRONI_SCOPE, as in patronictl.
        ClusterPath::with_namespace(&config.namespace, &scope)
            .map_err(|e| format!("invalid cluster name {scope:?}: {e}"))?;
        config.scope = scope;
        let auth = self
            .auth
            .clone()
            .or_else(|| config.restapi.authentication.clone());
        Ok((config, auth))
    }
}

fn document(text: &str) -> Result<Map<String, Value>, String> {
    match serde_norway::from_str::<Value>(text).map_err(|e| e.to_string())? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err("the configuration is not a mapping of keys to values".to_owned()),
    }
}

/// `ctl.authentication`, with `PATRONI_CTL_USERNAME`/`PATRONI_CTL_PASSWORD` over it.
fn ctl_auth(raw: &Map<String, Value>, vars: &[(String, String)]) -> Option<Credentials> {
    let section = raw
        .get("ctl")
        .and_then(|c| c.get("authentication"))
        .and_then(Value::as_object);
    let text = |name: &str| {
        section.and_then(|s| s.get(name)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let username = var("PATRONI_CTL_USERNAME").or_else(|| text("username"))?;
    Some(Credentials {
        username,
        password: var("PATRONI_CTL_PASSWORD").or_else(|| text("password")),
        options: Vec::new(),
    })
}

/// Fills in what a member configuration needs and ctl never uses (this member's name,
/// REST API and PostgreSQL addresses), so that patronictl's short configuration files
/// load. Present keys are kept.
fn fill_member_keys(raw: &mut Map<String, Value>) {
    fn section<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
        if !map.get(key).is_some_and(Value::is_object) {
            map.insert(key.to_owned(), Value::Object(Map::new()));
        }
        match map.get_mut(key) {
            Some(Value::Object(inner)) => inner,
            _ => unreachable!("inserted above"),
        }
    }
    fn default(map: &mut Map<String, Value>, key: &str, value: &str) {
        if map.get(key).is_none_or(Value::is_null) {
            map.insert(key.to_owned(), Value::from(value));
        }
    }
    default(raw, "name", "patronictl");
    default(section(raw, "restapi"), "listen", "127.0.0.1:8008");
    let postgresql = section(raw, "postgresql");
    default(postgresql, "listen", "127.0.0.1:5432");
    default(postgresql, "connect_address", "127.0.0.1:5432");
    default(postgresql, "data_dir", "/nonexistent/patronictl");
    let authentication = section(postgresql, "authentication");
    default(section(authentication, "superuser"), "username", "postgres");
    default(
        section(authentication, "replication"),
        "username",
        "replicator",
    );
}

/// patronictl's `--dcs-url`: `[scheme://]host[:port][/namespace]`. `etcd` and `etcd3`
/// both mean etcd's v3 API (the only one the agent speaks); without a scheme, port 2181
/// means ZooKeeper and anything else etcd, as in patronictl.
fn parse_dcs_url(url: &str) -> Result<(&'static str, Map<String, Value>), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("invalid port in DCS url {url}"))?;
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let scheme = match scheme {
        "" if port == Some(2181) => "zookeeper",
        "" | "etcd" | "etcd3" => "etcd3",
        "zookeeper" => "zookeeper",
        other => return Err(format!("Unknown dcs scheme: {other}")),
    };
    let mut section = Map::new();
    if scheme == "zookeeper" {
        let hosts = format!("{host}:{}", port.unwrap_or(2181));
        section.insert("hosts".to_owned(), Value::Array(vec![Value::from(hosts)]));
    } else {
        section.insert(
            "hosts".to_owned(),
            Value::from(format!("{host}:{}", port.unwrap_or(2379))),
        );
    }
    if !path.trim_matches('/').is_empty() {
        section.insert(
            "namespace".to_owned(),
            Value::from(format!("/{}", path.trim_matches('/'))),
        );
    }
    Ok((scheme, section))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, dcs_url: Option<&str>, vars: &[(String, String)]) -> CtlConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patronictl.yaml");
        std::fs::write(&path, text).unwrap();
        CtlConfig::load(Some(&path), true, dcs_url, vars).unwrap()
    }

    #[test]
    fn patronictls_short_file_loads() {
        let ctl = load_text(
            "scope: batman\nnamespace: /db\netcd3: {hosts: 10.0.0.5:2379}\n\
             ctl: {authentication: {username: admin, password: secret}}\n",
            None,
            &[],
        );
        let (config, auth) = ctl.for_cluster(None, &[]).unwrap();
        assert_eq!(config.cluster_path().key("leader"), "/db/batman/leader");
        assert_eq!(auth.unwrap().password.as_deref(), Some("secret"));
        let (other, _) = ctl.for_cluster(Some("robin"), &[]).unwrap();
        assert_eq!(other.cluster_path().key("leader"), "/db/robin/leader");
    }

    #[test]
    fn restapi_credentials_are_the_fallback() {
        let ctl = load_text(
            "scope: b\nzookeeper: {hosts: ['h:2181']}\n\
             restapi: {listen: 0.0.0.0:8008, authentication: {username: u, password: p}}\n",
            None,
            &[],
        );
        let (_, auth) = ctl.for_cluster(None, &[]).unwrap();
        assert_eq!(auth.unwrap().username, "u");
        let vars = [("PATRONI_CTL_USERNAME".to_owned(), "ctl".to_owned())];
        let (_, auth) = load_text("scope: b\netcd3: {hosts: 'h:1'}\n", None, &vars)
            .for_cluster(None, &vars)
            .unwrap();
        assert_eq!(auth.unwrap().username, "ctl");
    }

    #[test]
    fn dcs_urls_replace_the_dcs_section() {
        let ctl = load_text(
            "scope: b\nzookeeper: {hosts: ['h:2181']}\n",
            Some("etcd3://127.0.0.1:2379/custom"),
            &[],
        );
        let (config, _) = ctl.for_cluster(None, &[]).unwrap();
        assert!(matches!(config.dcs, crate::config::DcsConfig::Etcd3(_)));
        assert_eq!(config.cluster_path().prefix(), "/custom/b/");
        assert_eq!(parse_dcs_url("zk:2181").unwrap().0, "zookeeper");
        assert_eq!(parse_dcs_url("h").unwrap().0, "etcd3");
        assert_eq!(
            parse_dcs_url("consul://h:8500").unwrap_err(),
            "Unknown dcs scheme: consul"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_only_when_named() {
        let missing = Path::new("/nonexistent/patronictl.yaml");
        let error = CtlConfig::load(Some(missing), true, None, &[]).unwrap_err();
        assert!(error.contains("not existing or no read rights"), "{error}");
        let ctl = CtlConfig::load(Some(missing), false, Some("etcd3://h:2379"), &[]).unwrap();
        let error = ctl.for_cluster(None, &[]).unwrap_err();
        assert!(error.contains("no cluster name"), "{error}");
        assert!(ctl.for_cluster(Some("b"), &[]).is_ok());
        assert!(ctl.for_cluster(Some("a/b"), &[]).is_err());
    }
}
