//! Where the ensemble is and how to talk to it: Patroni's `zookeeper:` section, or a URL.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dcs_core::{Error, Result};
use serde::Deserialize;
use zookeeper_client::{Acl, AuthId, Permission};

/// How to reach a ZooKeeper ensemble, with Patroni's `zookeeper:` keys.
///
/// Deserialize it from the `zookeeper:` section of a Patroni configuration, or parse a URL
/// (`zk://h1:2181,h2:2181`, `zks://…` for TLS) with [`ZooKeeperConfig::from_url`] or
/// [`str::parse`].
///
/// | key | meaning |
/// |---|---|
/// | `hosts` | `host:port` list, or one comma-separated string; a `/chroot` suffix is kept |
/// | `use_ssl` | TLS to every host (needs `cacert`) |
/// | `cacert` | PEM file of the CA that signed the servers' certificates |
/// | `cert`, `key` | PEM client certificate and key, for servers that want one |
/// | `verify` | must be `true` (the default): unverified TLS is refused |
/// | `key_password` | refused: decrypt the key first (rustls reads plain PEM keys only) |
/// | `auth_data` | `{scheme: credential}` sent on every connection, e.g. `{digest: "user:pass"}` |
/// | `set_acls` | `{principal: [READ, WRITE, CREATE, DELETE, ADMIN, ALL]}`: x509 ACLs on nodes we create |
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooKeeperConfig {
    /// The ensemble's client addresses.
    #[serde(deserialize_with = "hosts")]
    pub hosts: Vec<String>,
    /// TLS to every host.
    #[serde(default)]
    pub use_ssl: bool,
    /// PEM file of the CA certificates (TLS).
    #[serde(default)]
    pub cacert: Option<String>,
    /// PEM file of the client certificate (TLS).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM file of the client key (TLS).
    #[serde(default)]
    pub key: Option<String>,
    /// Password of an encrypted client key: not supported, see the table above.
    #[serde(default)]
    pub key_password: Option<String>,
    /// Whether to verify the servers' certificates: only `true` is supported.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Credentials per scheme, added to every connection (`addauth`).
    #[serde(default)]
    pub auth_data: BTreeMap<String, String>,
    /// x509 principals and their permissions on every node this client creates; empty means
    /// ZooKeeper's open ACL, as Patroni's default.
    #[serde(default)]
    pub set_acls: BTreeMap<String, Vec<String>>,
}

fn yes() -> bool {
    true
}

fn hosts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hosts {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Hosts::deserialize(deserializer)? {
        Hosts::One(list) => split_hosts(&list),
        Hosts::Many(list) => list.iter().flat_map(|h| split_hosts(h)).collect(),
    })
}

fn split_hosts(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

impl fmt::Debug for ZooKeeperConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials stay out of logs.
        f.debug_struct("ZooKeeperConfig")
            .field("hosts", &self.hosts)
            .field("use_ssl", &self.use_ssl)
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("verify", &self.verify)
            .field("auth_data", &self.auth_data.keys().collect::<Vec<_>>())
            .field("set_acls", &self.set_acls)
            .finish_non_exhaustive()
    }
}

impl ZooKeeperConfig {
    /// Plain TCP to these `host:port`s.
    pub fn new<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            verify: true,
            ..Self::default()
        }
    }

    /// Parses `zk://h1:2181,h2:2181[/chroot]` (plain) or `zks://…` (TLS; set
    /// [`cacert`](Self::cacert) before use).
    pub fn from_url(url: &str) -> Result<Self> {
        let (use_ssl, rest) = if let Some(rest) = url.strip_prefix("zk://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("zks://") {
            (true, rest)
        } else {
            return Err(Error::InvalidConfig(format!(
                "ZooKeeper URL {url:?} must start with zk:// or zks://"
            )));
        };
        let config = Self {
            use_ssl,
            ..Self::new(split_hosts(rest))
        };
        config.check()?;
        Ok(config)
    }

    /// The connect string the client takes: `h1:2181,h2:2181[/chroot]`.
    #[must_use]
    pub fn connect_string(&self) -> String {
        self.hosts.join(",")
    }

    /// Checks what can be checked without the network or the file system.
    pub fn check(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(Error::InvalidConfig(
                "zookeeper.hosts is empty: name at least one host:port".into(),
            ));
        }
        if !self.verify {
            return Err(Error::InvalidConfig(
                "zookeeper.verify: false is not supported: unverified TLS would let anyone \
                 in the middle hand out the leader lock; give the CA in zookeeper.cacert"
                    .into(),
            ));
        }
        if self.key_password.is_some() {
            return Err(Error::InvalidConfig(
                "zookeeper.key_password is not supported: store the client key unencrypted \
                 (PEM) with restricted file permissions"
                    .into(),
            ));
        }
        if self.use_ssl && self.cacert.is_none() {
            return Err(Error::InvalidConfig(
                "zookeeper.use_ssl needs zookeeper.cacert (the CA of the servers)".into(),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::InvalidConfig(
                "zookeeper.cert and zookeeper.key go together".into(),
            ));
        }
        self.acls().map(|_| ())
    }

    /// The ACLs of nodes this client creates, from `set_acls`; empty for the open ACL.
    pub(crate) fn acls(&self) -> Result<Vec<Acl>> {
        let mut acls = Vec::with_capacity(self.set_acls.len());
        for (principal, permissions) in &self.set_acls {
            let mut bits = Permission::NONE;
            for permission in permissions {
                bits = bits
                    | match permission.to_ascii_uppercase().as_str() {
                        "READ" => Permission::READ,
                        "WRITE" => Permission::WRITE,
                        "CREATE" => Permission::CREATE,
                        "DELETE" => Permission::DELETE,
                        "ADMIN" => Permission::ADMIN,
                        "ALL" => Permission::ALL,
                        other => {
                            return Err(Error::InvalidConfig(format!(
                                "zookeeper.set_acls.{principal}: unknown permission {other:?} \
                                 (READ, WRITE, CREATE, DELETE, ADMIN or ALL)"
                            )));
                        }
                    };
            }
            acls.push(Acl::new(bits, AuthId::new("x509", principal)));
        }
        Ok(acls)
    }
}

impl FromStr for ZooKeeperConfig {
    type Err = Error;

    /// A URL (`zk://…`, `zks://…`) or a bare connect string (`h1:2181,h2:2181`).
    fn from_str(s: &str) -> Result<Self> {
        if s.contains("://") {
            Self::from_url(s)
        } else {
            let config = Self::new(split_hosts(s));
            config.check()?;
            Ok(config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json(json: &str) -> ZooKeeperConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn hosts_are_read_as_a_list_or_one_comma_separated_string() {
        let list = from_json(r#"{"hosts":["a:2181","b:2181"]}"#);
        let string = from_json(r#"{"hosts":"a:2181, b:2181"}"#);
        assert_eq!(list, string);
        assert_eq!(list.connect_string(), "a:2181,b:2181");
        assert!(list.verify && !list.use_ssl);
        list.check().expect("plain hosts are valid");
    }

    #[test]
    fn urls_and_connect_strings_parse() {
        let url: ZooKeeperConfig = "zk://h1:2181,h2:2181/chroot".parse().expect("url");
        assert_eq!(url.hosts, ["h1:2181", "h2:2181/chroot"]);
        assert!(!url.use_ssl);
        let bare: ZooKeeperConfig = "h1:2181".parse().expect("bare");
        assert_eq!(bare.hosts, ["h1:2181"]);
        assert!(ZooKeeperConfig::from_url("http://h1:2181").is_err());
        // TLS without a CA cannot verify anyone.
        assert!(ZooKeeperConfig::from_url("zks://h1:2281").is_err());
    }

    #[test]
    fn unsupported_or_unsafe_settings_are_refused_by_name() {
        for (json, named) in [
            (r#"{"hosts":"a:1","verify":false}"#, "verify"),
            (r#"{"hosts":"a:1","key_password":"x"}"#, "key_password"),
            (r#"{"hosts":"a:1","use_ssl":true}"#, "cacert"),
            (r#"{"hosts":"a:1","cert":"c.pem"}"#, "key"),
            (
                r#"{"hosts":"a:1","set_acls":{"CN=pg":["READ","FLY"]}}"#,
                "FLY",
            ),
            (r#"{"hosts":[]}"#, "hosts"),
        ] {
            let error = from_json(json).check().expect_err(json);
            assert!(matches!(error, Error::InvalidConfig(_)), "{json}");
            assert!(error.to_string().contains(named), "{json}: {error}");
        }
        assert!(serde_json::from_str::<ZooKeeperConfig>(r#"{"hosts":"a:1","bogus":1}"#).is_err());
    }

    #[test]
    fn acls_give_each_principal_its_permissions() {
        let config = from_json(
            r#"{"hosts":"a:1","auth_data":{"digest":"u:p"},"set_acls":{"CN=admin":["ALL"],"CN=pg":["read","WRITE"]}}"#,
        );
        let acls = config.acls().expect("acls");
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[0].permission(), Permission::ALL);
        assert_eq!(acls[1].permission(), Permission::READ | Permission::WRITE);
        assert_eq!((acls[1].scheme(), acls[1].id()), ("x509", "CN=pg"));
        assert!(
            !format!("{config:?}").contains("u:p"),
            "credentials stay out of Debug"
        );
    }
}
