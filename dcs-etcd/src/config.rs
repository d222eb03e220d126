//! Connection settings: Patroni's `etcd3:` section, or an `etcd://` URL.

use std::fmt;
use std::path::PathBuf;

use dcs_core::{Error, Result};
use serde::Deserialize;

/// etcd's default client port, as Patroni assumes it.
pub const DEFAULT_PORT: u16 = 2379;

/// Connection settings with the keys of Patroni's `etcd3:` section, so an existing Patroni
/// configuration deserializes unchanged.
///
/// Precedence is Patroni's: `url`, else `hosts`, else `host`. `hosts` may be a list or one
/// comma-separated string; a host without a port gets `port` (default 2379). TLS is used
/// when `protocol` (or the `url`'s scheme) is `https`. Patroni's `proxy` and `srv` keys
/// (discovery through a proxy or DNS SRV records) are not supported and are refused by
/// [`EtcdConfig::endpoints`], naming the key.
///
/// ```
/// # fn main() -> dcs_core::Result<()> {
/// use dcs_etcd::EtcdConfig;
///
/// let config: EtcdConfig = serde_json::from_str(
///     r#"{"hosts": "10.0.0.1:2379,10.0.0.2", "username": "patroni", "password": "secret"}"#,
/// ).unwrap();
/// assert_eq!(config.endpoints()?, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
///
/// let config = EtcdConfig::from_url("etcd://h1:2379,h2:2379")?;
/// assert_eq!(config.endpoints()?, ["http://h1:2379", "http://h2:2379"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// One `host[:port]`.
    #[serde(default)]
    pub host: Option<String>,
    /// Several `host[:port]`s: a list, or a comma-separated string.
    #[serde(default)]
    pub hosts: Option<Hosts>,
    /// The default port for `hosts` entries without one (Patroni's `port`).
    #[serde(default)]
    pub port: Option<u16>,
    /// One `http(s)://[user:password@]host[:port]` URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `http` (default) or `https`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// User name for etcd's authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for etcd's authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates (needed with `https`).
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// PEM file of the client certificate, for client-certificate authentication.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Patroni's `proxy`: not supported, refused by [`EtcdConfig::endpoints`].
    #[serde(default)]
    pub proxy: Option<String>,
    /// Patroni's `srv`: not supported, refused by [`EtcdConfig::endpoints`].
    #[serde(default)]
    pub srv: Option<String>,
}

/// Patroni's `hosts`: a YAML list or one comma-separated string.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Hosts {
    /// `hosts: [a:2379, b:2379]`
    List(Vec<String>),
    /// `hosts: a:2379,b:2379`
    Text(String),
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("host", &self.host)
            .field("hosts", &self.hosts)
            .field("port", &self.port)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// Settings from one URL naming every endpoint: `etcd://h1:2379,h2:2379`
    /// (`etcd3://` too), `etcds://...` for TLS, with optional `user:password@` before the
    /// hosts. Plain `http://` and `https://` URLs name one endpoint, as Patroni's `url`.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid =
            |why: &str| Error::InvalidConfig(format!("etcd URL {}: {why}", redact_url(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected etcd://host:port[,host:port...]"))?;
        let protocol = match scheme {
            "etcd" | "etcd3" | "http" => "http",
            "etcds" | "etcd3s" | "https" => "https",
            _ => return Err(invalid("the scheme must be etcd, etcds, http or https")),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, rest),
        };
        if hosts.is_empty() || hosts.contains('/') {
            return Err(invalid(
                "expected host:port[,host:port...] after the scheme",
            ));
        }
        let (username, password) = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| invalid("credentials must be user:password"))?;
                (Some(user.to_owned()), Some(password.to_owned()))
            }
            None => (None, None),
        };
        Ok(Self {
            hosts: Some(Hosts::Text(hosts.to_owned())),
            protocol: Some(protocol.to_owned()),
            username,
            password,
            ..Self::default()
        })
    }

    /// The client URLs to connect to (`http://h1:2379`, ...), checked.
    pub fn endpoints(&self) -> Result<Vec<String>> {
        if self.proxy.is_some() {
            return Err(unsupported("proxy"));
        }
        if self.srv.is_some() {
            return Err(unsupported("srv"));
        }
        if let Some(url) = &self.url {
            let config = Self::from_url(url).map_err(|_| {
                Error::InvalidConfig(format!(
                    "etcd3.url {}: expected http(s)://host[:port]",
                    redact_url(url)
                ))
            })?;
            let mut endpoints = config.endpoints()?;
            if endpoints.len() != 1 {
                return Err(Error::InvalidConfig(
                    "etcd3.url names one endpoint; use etcd3.hosts for several".to_owned(),
                ));
            }
            return Ok(vec![endpoints.remove(0)]);
        }
        let protocol = self.protocol()?;
        let port = self.port.unwrap_or(DEFAULT_PORT);
        let (key, hosts): (&str, Vec<&str>) = match (&self.hosts, &self.host) {
            (Some(Hosts::List(list)), _) => ("hosts", list.iter().map(String::as_str).collect()),
            (Some(Hosts::Text(text)), _) => ("hosts", text.split(',').collect()),
            (None, Some(host)) => ("host", vec![host.as_str()]),
            (None, None) => {
                return Err(Error::InvalidConfig(
                    "etcd3: one of url, hosts or host is required".to_owned(),
                ));
            }
        };
        let mut endpoints = Vec::with_capacity(hosts.len());
        for host in hosts.iter().map(|h| h.trim()) {
            endpoints.push(format!("{protocol}://{}", host_port(key, host, port)?));
        }
        if endpoints.is_empty() {
            return Err(Error::InvalidConfig(format!("etcd3.{key} names no host")));
        }
        Ok(endpoints)
    }

    /// Whether the endpoints are reached over TLS.
    pub fn uses_tls(&self) -> Result<bool> {
        Ok(self.endpoints()?.iter().any(|e| e.starts_with("https://")))
    }

    /// The user name and password, from `username`/`password` or the `url`'s credentials.
    pub fn credentials(&self) -> Result<Option<(String, String)>> {
        let from_url = match &self.url {
            Some(url) => {
                let parsed = Self::from_url(url)?;
                parsed.username.zip(parsed.password)
            }
            None => None,
        };
        match (&self.username, &self.password, from_url) {
            (Some(user), Some(password), _) => Ok(Some((user.clone(), password.clone()))),
            (Some(_), None, _) => Err(Error::InvalidConfig(
                "etcd3.username is set but etcd3.password is not".to_owned(),
            )),
            (None, Some(_), _) => Err(Error::InvalidConfig(
                "etcd3.password is set but etcd3.username is not".to_owned(),
            )),
            (None, None, from_url) => Ok(from_url),
        }
    }

    fn protocol(&self) -> Result<&str> {
        match self.protocol.as_deref() {
            None | Some("http") => Ok("http"),
            Some("https") => Ok("https"),
            Some(other) => Err(Error::InvalidConfig(format!(
                "etcd3.protocol {other:?}: expected http or https"
            ))),
        }
    }
}

fn unsupported(key: &str) -> Error {
    Error::InvalidConfig(format!(
        "etcd3.{key} is not supported: list the members in etcd3.hosts"
    ))
}

/// `host[:port]` → `host:port`, checked; IPv6 literals in brackets keep them.
fn host_port(key: &str, host: &str, default_port: u16) -> Result<String> {
    let invalid = |why: &str| Error::InvalidConfig(format!("etcd3.{key} entry {host:?}: {why}"));
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    if host.contains("://") || host.contains('/') || host.contains('@') {
        return Err(invalid("expected host[:port]"));
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (address, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("unclosed '['"))?;
        (format!("[{address}]"), after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (host.to_owned(), None),
        }
    };
    if name.is_empty() || name.contains(':') && !name.starts_with('[') {
        return Err(invalid("expected host[:port]"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?,
        None => default_port,
    };
    Ok(format!("{name}:{port}"))
}

/// A URL with any password replaced, for messages and `Debug`.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, hosts) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:<redacted>@{hosts}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> EtcdConfig {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn patroni_keys_give_the_endpoints_patroni_would_use() {
        let cases = [
            (
                r#"{"host":"127.0.0.1:2379"}"#,
                vec!["http://127.0.0.1:2379"],
            ),
            (r#"{"host":"etcd"}"#, vec!["http://etcd:2379"]),
            (
                r#"{"hosts":["a:1","b"],"protocol":"https","cacert":"/ca.pem"}"#,
                vec!["https://a:1", "https://b:2379"],
            ),
            (
                r#"{"hosts":"a:1, b:2 ,c"}"#,
                vec!["http://a:1", "http://b:2", "http://c:2379"],
            ),
            (
                r#"{"hosts":"a,b","port":2380}"#,
                vec!["http://a:2380", "http://b:2380"],
            ),
            (r#"{"hosts":["[::1]:2379"]}"#, vec!["http://[::1]:2379"]),
            (
                r#"{"url":"https://etcd.example:4001","host":"ignored"}"#,
                vec!["https://etcd.example:4001"],
            ),
            (r#"{"url":"http://u:p@etcd"}"#, vec!["http://etcd:2379"]),
            (r#"{"hosts":"a","host":"ignored"}"#, vec!["http://a:2379"]),
        ];
        for (json, expected) in cases {
            assert_eq!(parse(json).endpoints().unwrap(), expected, "{json}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases = [
            (r"{}", "url, hosts or host"),
            (r#"{"host":"a:port"}"#, "etcd3.host"),
            (r#"{"host":"a:0"}"#, "etcd3.host"),
            (r#"{"hosts":"a,,b"}"#, "etcd3.hosts"),
            (r#"{"hosts":["http://a:1"]}"#, "etcd3.hosts"),
            (r#"{"host":"a","protocol":"grpc"}"#, "etcd3.protocol"),
            (r#"{"url":"ftp://a"}"#, "etcd3.url"),
            (r#"{"url":"http://a,b"}"#, "etcd3.url"),
            (r#"{"srv":"example.org"}"#, "etcd3.srv"),
            (r#"{"proxy":"http://p:2379"}"#, "etcd3.proxy"),
        ];
        for (json, key) in cases {
            let error = parse(json).endpoints().unwrap_err();
            assert!(matches!(error, Error::InvalidConfig(_)), "{json}");
            assert!(error.to_string().contains(key), "{json}: {error}");
        }
        assert!(serde_json::from_str::<EtcdConfig>(r#"{"hosst":"a"}"#).is_err());
        let half = parse(r#"{"host":"a","username":"u"}"#);
        assert!(
            half.credentials()
                .unwrap_err()
                .to_string()
                .contains("etcd3.password")
        );
    }

    #[test]
    fn etcd_urls_name_every_endpoint_and_the_credentials() {
        let config = EtcdConfig::from_url("etcd://h1:2379,h2:2379").unwrap();
        assert_eq!(
            config.endpoints().unwrap(),
            ["http://h1:2379", "http://h2:2379"]
        );
        assert_eq!(config.credentials().unwrap(), None);
        let config = EtcdConfig::from_url("etcds://root:s3cr:et@h1,h2:4001/").unwrap();
        assert_eq!(
            config.endpoints().unwrap(),
            ["https://h1:2379", "https://h2:4001"]
        );
        assert_eq!(
            config.credentials().unwrap(),
            Some(("root".to_owned(), "s3cr:et".to_owned()))
        );
        assert!(!format!("{config:?}").contains("s3cr"));
        for bad in [
            "h1:2379",
            "zk://h1",
            "etcd://",
            "etcd://u@h1",
            "etcd://h1/path",
        ] {
            assert!(EtcdConfig::from_url(bad).is_err(), "{bad}");
        }
        let url_credentials = parse(r#"{"url":"http://u:p@etcd"}"#);
        assert_eq!(
            url_credentials.credentials().unwrap(),
            Some(("u".to_owned(), "p".to_owned()))
        );
    }
}
