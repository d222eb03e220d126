//! `PATRONI_*` environment variables, mapped as Patroni 3.0.2's
//! `Config._build_environment_configuration` maps them, and merged as its `patch_config`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{Warning, WarningKind};

const PREFIX: &str = "PATRONI_";

/// Patroni's `_AUTH_ALLOWED_PARAMETERS`: what `PATRONI_<USER>_<PARAM>` and a user's
/// `authentication` section may set (`username`, `password`, then libpq options).
pub(super) const AUTH_PARAMETERS: &[&str] = &[
    "username",
    "password",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "gssencmode",
    "channel_binding",
];

/// The suffixes Patroni maps from `PATRONI_<SECTION>_<SUFFIX>` into any section, which is
/// how DCS sections (`PATRONI_ETCD3_HOSTS`, `PATRONI_ZOOKEEPER_HOSTS`) get their values.
const SECTION_SUFFIXES: &[&str] = &[
    "HOST",
    "HOSTS",
    "PORT",
    "USE_PROXIES",
    "PROTOCOL",
    "SRV",
    "SRV_SUFFIX",
    "URL",
    "PROXY",
    "CACERT",
    "CERT",
    "KEY",
    "VERIFY",
    "TOKEN",
    "CHECKS",
    "DC",
    "CONSISTENCY",
    "REGISTER_SERVICE",
    "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME",
    "SERVICE_TAGS",
    "NAMESPACE",
    "CONTEXT",
    "USE_ENDPOINTS",
    "SCOPE_LABEL",
    "ROLE_LABEL",
    "POD_IP",
    "PORTS",
    "LABELS",
    "BYPASS_API_SERVICE",
    "RETRIABLE_HTTP_CODES",
    "KEY_PASSWORD",
    "USE_SSL",
    "SET_ACLS",
    "GROUP",
    "DATABASE",
];

/// The variables left to map; Patroni pops each one it uses, and so do we, so that the
/// order of the steps below decides, as in Patroni, who gets an ambiguous name.
struct Vars(BTreeMap<String, String>);

impl Vars {
    /// The non-empty value of `PATRONI_<NAME>`, consumed.
    fn pop(&mut self, name: &str) -> Option<String> {
        self.0
            .remove(&format!("{PREFIX}{}", name.to_uppercase()))
            .filter(|v| !v.is_empty())
    }
}

/// The configuration the environment describes, to be merged over the file with
/// [`patch`], and warnings for `PATRONI_*` variables that map to nothing.
pub(crate) fn overlay(vars: impl Iterator<Item = (String, String)>) -> (Value, Vec<Warning>) {
    let mut vars = Vars(vars.filter(|(k, _)| k.starts_with(PREFIX)).collect());
    // Read by `Config::from_env`, not a setting.
    vars.0.remove("PATRONI_CONFIGURATION");
    let mut out = Sections::new();
    let mut top = Map::new();

    for param in ["name", "namespace", "scope"] {
        if let Some(value) = vars.pop(param) {
            top.insert(param.to_owned(), Value::String(value));
        }
    }
    for (name, old) in [
        ("level", "loglevel"),
        ("format", "logformat"),
        ("dateformat", "log_datefmt"),
    ] {
        if let Some(value) = vars.pop(old) {
            vars.0
                .entry(format!("{PREFIX}LOG_{}", name.to_uppercase()))
                .or_insert(value);
        }
    }
    section_values(&mut vars, &mut out);

    let restapi_auth = auth(&mut vars, "restapi", &AUTH_PARAMETERS[..2]);
    if !restapi_auth.is_empty() {
        out.entry("restapi".to_owned())
            .or_default()
            .insert("authentication".to_owned(), Value::Object(restapi_auth));
    }
    let mut authentication = Map::new();
    for user in ["replication", "superuser", "rewind"] {
        let entry = auth(&mut vars, user, AUTH_PARAMETERS);
        if !entry.is_empty() {
            authentication.insert(user.to_owned(), Value::Object(entry));
        }
    }
    if !authentication.is_empty() {
        out.entry("postgresql".to_owned())
            .or_default()
            .insert("authentication".to_owned(), Value::Object(authentication));
    }

    dcs_values(&mut vars, &mut out);
    for dcs in ["etcd", "etcd3"] {
        if out.contains_key(dcs) {
            let credentials = auth(&mut vars, dcs, &AUTH_PARAMETERS[..2]);
            out.entry(dcs.to_owned()).or_default().extend(credentials);
        }
    }

    let users = users(&mut vars);
    if !users.is_empty() {
        let mut bootstrap = Map::new();
        bootstrap.insert("users".to_owned(), Value::Object(users));
        out.insert("bootstrap".to_owned(), bootstrap);
    }

    let warnings = vars
        .0
        .into_keys()
        .map(|name| {
            Warning::new(
                WarningKind::UnusedEnvironment,
                name,
                "not a Patroni setting (or empty); ignored",
            )
        })
        .collect();
    for (section, values) in out {
        top.insert(section, Value::Object(values));
    }
    (Value::Object(top), warnings)
}

type Sections = BTreeMap<String, Map<String, Value>>;

/// Patroni's `_set_section_values` and the conversions after it.
fn section_values(vars: &mut Vars, out: &mut Sections) {
    let sections: [(&str, &[&str]); 5] = [
        (
            "restapi",
            &[
                "listen",
                "connect_address",
                "certfile",
                "keyfile",
                "keyfile_password",
                "cafile",
                "ciphers",
                "verify_client",
                "http_extra_headers",
                "https_extra_headers",
                "allowlist",
                "allowlist_include_members",
            ],
        ),
        (
            "ctl",
            &[
                "insecure",
                "cacert",
                "certfile",
                "keyfile",
                "keyfile_password",
            ],
        ),
        (
            "postgresql",
            &[
                "listen",
                "connect_address",
                "proxy_address",
                "config_dir",
                "data_dir",
                "pgpass",
                "bin_dir",
            ],
        ),
        (
            "log",
            &[
                "level",
                "traceback_level",
                "format",
                "dateformat",
                "max_queue_size",
                "dir",
                "file_size",
                "file_num",
                "loggers",
            ],
        ),
        (
            "raft",
            &[
                "data_dir",
                "self_addr",
                "partner_addrs",
                "password",
                "bind_addr",
            ],
        ),
    ];
    for (section, params) in sections {
        for param in params {
            if let Some(value) = vars.pop(&format!("{section}_{param}")) {
                let value = match (section, *param) {
                    ("restapi", "allowlist_include_members") | ("ctl", "insecure") => {
                        parse_bool(&value).map(Value::Bool)
                    }
                    ("log", "max_queue_size" | "file_size" | "file_num") => {
                        value.trim().parse::<i64>().ok().map(Value::from)
                    }
                    ("raft", "partner_addrs") | ("restapi", "allowlist") => parse_list(&value),
                    ("restapi", "http_extra_headers" | "https_extra_headers")
                    | ("log", "loggers") => parse_dict(&value),
                    _ => Some(Value::String(value)),
                };
                if let Some(value) = value {
                    out.entry(section.to_owned())
                        .or_default()
                        .insert((*param).to_owned(), value);
                }
            }
        }
    }
}

/// `PATRONI_<SECTION>_<SUFFIX>` for Patroni's generic suffixes (the DCS sections).
fn dcs_values(vars: &mut Vars, out: &mut Sections) {
    let names: Vec<String> = vars.0.keys().cloned().collect();
    for param in names {
        let rest = &param[PREFIX.len()..];
        let Some((name, suffix)) = rest.split_once('_') else {
            continue;
        };
        if name.is_empty() || !SECTION_SUFFIXES.contains(&suffix) {
            continue;
        }
        let Some(value) = vars.0.remove(&param) else {
            continue;
        };
        let value = if name == "CITUS" {
            match suffix {
                "GROUP" => value.trim().parse::<i64>().ok().map(Value::from),
                "DATABASE" => Some(Value::String(value)),
                _ => continue,
            }
        } else {
            match suffix {
                "PORT" => value.trim().parse::<i64>().ok().map(Value::from),
                "HOSTS" | "PORTS" | "CHECKS" | "SERVICE_TAGS" | "RETRIABLE_HTTP_CODES" => {
                    if value.is_empty() {
                        Some(Value::String(value))
                    } else {
                        parse_list(&value)
                    }
                }
                "LABELS" | "SET_ACLS" => parse_dict(&value),
                "USE_PROXIES" | "REGISTER_SERVICE" | "USE_ENDPOINTS" | "BYPASS_API_SERVICE"
                | "VERIFY" => parse_bool(&value).map(Value::Bool),
                _ => Some(Value::String(value)),
            }
        };
        if let Some(value) = value {
            out.entry(name.to_lowercase())
                .or_default()
                .insert(suffix.to_lowercase(), value);
        }
    }
}

/// `PATRONI_<USER>_PASSWORD` (+ `_OPTIONS`): Patroni's legacy `bootstrap.users`.
fn users(vars: &mut Vars) -> Map<String, Value> {
    let mut users = Map::new();
    let names: Vec<String> = vars.0.keys().cloned().collect();
    for param in names {
        let Some(user) = param[PREFIX.len()..].strip_suffix("_PASSWORD") else {
            continue;
        };
        if user.is_empty() {
            continue;
        }
        let password = vars.0.remove(&param).unwrap_or_default();
        if password.is_empty() {
            continue;
        }
        let mut entry = Map::new();
        entry.insert("password".to_owned(), Value::String(password));
        let options = vars
            .0
            .remove(&format!("{PREFIX}{user}_OPTIONS"))
            .and_then(|o| parse_list(&o));
        if let Some(options) = options {
            entry.insert("options".to_owned(), options);
        }
        users.insert(user.to_owned(), Value::Object(entry));
    }
    users
}

fn auth(vars: &mut Vars, name: &str, params: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for param in params {
        if let Some(value) = vars.pop(&format!("{name}_{param}")) {
            out.insert((*param).to_owned(), Value::String(value));
        }
    }
    out
}

/// Patroni's `parse_bool`: `on/true/yes/1` and `off/false/no/0`, any case.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.to_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Patroni's `_parse_list`: `a,b` or `[a, b]` or a YAML block list.
fn parse_list(value: &str) -> Option<Value> {
    let text = if value.trim().starts_with('-') || value.contains('[') {
        value.to_owned()
    } else {
        format!("[{value}]")
    };
    serde_norway::from_str::<Value>(&text)
        .ok()
        .filter(|v| !is_falsy(v))
}

/// Patroni's `_parse_dict`: `k: v, k2: v2` or `{k: v}`.
fn parse_dict(value: &str) -> Option<Value> {
    let text = if value.trim().starts_with('{') {
        value.to_owned()
    } else {
        format!("{{{value}}}")
    };
    serde_norway::from_str::<Value>(&text)
        .ok()
        .filter(|v| !is_falsy(v))
}

fn is_falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Patroni's `patch_config`: `data` merged into `config`; objects merge key by key, a
/// null removes the key, anything else replaces.
pub(crate) fn patch(config: &mut Map<String, Value>, data: &Map<String, Value>) {
    for (name, value) in data {
        match value {
            Value::Null => {
                config.remove(name);
            }
            Value::Object(inner) => match config.get_mut(name) {
                Some(Value::Object(existing)) => patch(existing, inner),
                _ => {
                    config.insert(name.clone(), value.clone());
                }
            },
            _ => {
                config.insert(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Value {
        overlay(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .0
    }

    #[test]
    fn dcs_sections_come_from_the_generic_suffixes() {
        let value = env(&[
            ("PATRONI_ETCD3_HOSTS", "a:2379,b:2379"),
            ("PATRONI_ETCD3_USERNAME", "root"),
            ("PATRONI_ETCD3_PASSWORD", "pw"),
            ("PATRONI_ZOOKEEPER_PORT", "x"),
        ]);
        assert_eq!(
            value["etcd3"],
            serde_json::json!({"hosts": ["a:2379", "b:2379"], "username": "root", "password": "pw"})
        );
        // An unparsable port is dropped, as in Patroni.
        assert!(value.get("zookeeper").is_none());
    }

    #[test]
    fn a_password_of_an_unknown_user_becomes_a_bootstrap_user() {
        let value = env(&[
            ("PATRONI_admin_PASSWORD", "pw"),
            ("PATRONI_admin_OPTIONS", "createdb"),
        ]);
        assert_eq!(
            value["bootstrap"]["users"]["admin"],
            serde_json::json!({"password": "pw", "options": ["createdb"]})
        );
    }
}
