//! `restapi.allowlist` and `allowlist_include_members`: which client addresses may call
//! the authenticated endpoints at all, checked before the credentials, as Patroni's
//! `check_access` does (403 `Access is denied`).
//!
//! The matching is pure ([`Network`], [`Allowlist::allows`]); names are resolved by
//! [`Allowlist::resolve`] once at startup and by [`member_addresses`] per request, like
//! Patroni (which resolves the members' `api_url` hosts on every check).

use std::net::IpAddr;

use dcs_core::ClusterState;

use crate::config::RestApi;

/// An IP network: an address with a prefix length (`10.0.0.0/8`, `::1/128`). A lone
/// address is a network of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `address` or `address/prefix` like Python's `ip_network(text, strict=False)`:
    /// host bits after the prefix are ignored. `None` for anything else (a host name).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let base: IpAddr = address.parse().ok()?;
        let width = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= width)?,
            None => width,
        };
        Some(Self { base, prefix })
    }

    /// The network of exactly `address`.
    #[must_use]
    pub fn single(address: IpAddr) -> Self {
        let address = address.to_canonical();
        Self {
            base: address,
            prefix: if address.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `address` lies in this network. An IPv4 client seen through an IPv6
    /// socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.base.to_canonical(), address.to_canonical()) {
            (IpAddr::V4(base), IpAddr::V4(address)) => {
                same_prefix(&base.octets(), &address.octets(), self.prefix)
            }
            (IpAddr::V6(base), IpAddr::V6(address)) => {
                same_prefix(&base.octets(), &address.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xff_u8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The addresses allowed to call the authenticated endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// `restapi.allowlist`, names resolved.
    pub networks: Vec<Network>,
    /// `restapi.allowlist_include_members`: every member's `api_url` host too.
    pub include_members: bool,
}

impl Allowlist {
    /// The allowlist `restapi` configures, or `None` when it configures none (everyone
    /// may try their credentials). A host name is resolved now; one that does not
    /// resolve allows nobody and is named in a warning, as Patroni does.
    pub async fn resolve(restapi: &RestApi) -> Option<Self> {
        if restapi.allowlist.is_empty() && !restapi.allowlist_include_members {
            return None;
        }
        let mut networks = Vec::new();
        for entry in &restapi.allowlist {
            if let Some(network) = Network::parse(entry) {
                networks.push(network);
                continue;
            }
            let resolved = resolve_host(entry).await;
            if resolved.is_empty() {
                tracing::warn!("restapi.allowlist: cannot resolve {entry:?}; it allows nobody");
            }
            networks.extend(resolved.into_iter().map(Network::single));
        }
        Some(Self {
            networks,
            include_members: restapi.allowlist_include_members,
        })
    }

    /// Whether a client at `client` may go on to the credentials check; `members` are
    /// the members' addresses, used only with `include_members`.
    #[must_use]
    pub fn allows(&self, client: IpAddr, members: &[IpAddr]) -> bool {
        self.networks.iter().any(|n| n.contains(client))
            || (self.include_members
                && members
                    .iter()
                    .any(|member| Network::single(*member).contains(client)))
    }
}

/// The addresses of every member's `api_url` host in `cluster`, resolved.
pub(super) async fn member_addresses(cluster: Option<&ClusterState>) -> Vec<IpAddr> {
    let Some(cluster) = cluster else {
        return Vec::new();
    };
    let mut addresses = Vec::new();
    for member in &cluster.members {
        let Some(host) = member.data.api_url.as_deref().and_then(url_host) else {
            continue;
        };
        match host.parse::<IpAddr>() {
            Ok(address) => addresses.push(address),
            Err(_) => addresses.extend(resolve_host(host).await),
        }
    }
    addresses
}

/// The host of `scheme://host[:port]/...`, without the brackets of an IPv6 literal.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// Every address `host` resolves to; none when it does not resolve.
async fn resolve_host(host: &str) -> Vec<IpAddr> {
    match tokio::net::lookup_host((host, 0)).await {
        Ok(found) => found.map(|socket| socket.ip()).collect(),
        Err(error) => {
            tracing::debug!("cannot resolve {host:?}: {error}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match_like_python_ip_network() {
        let cases = [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            // strict=False: host bits after the prefix do not matter.
            ("192.168.1.77/24", "192.168.1.3", true),
            ("192.168.1.0/23", "192.168.0.255", true),
            ("192.168.1.0/23", "192.168.2.0", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("::1", "::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/33", "2001:db8:8000::1", false),
            // An IPv4 client seen through an IPv6 socket.
            ("127.0.0.0/8", "::ffff:127.0.0.5", true),
            ("10.0.0.0/8", "::1", false),
        ];
        for (network, address, expected) in cases {
            let parsed = Network::parse(network).unwrap();
            assert_eq!(
                parsed.contains(ip(address)),
                expected,
                "{network} ∋ {address}"
            );
        }
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "1.2.3.4/x",
        ] {
            assert_eq!(Network::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn members_are_allowed_only_when_included() {
        let list = Allowlist {
            networks: vec![Network::parse("10.0.0.0/8").unwrap()],
            include_members: false,
        };
        let members = [ip("192.0.2.7")];
        assert!(list.allows(ip("10.1.1.1"), &members));
        assert!(!list.allows(ip("192.0.2.7"), &members));
        let with_members = Allowlist {
            include_members: true,
            ..list
        };
        assert!(with_members.allows(ip("192.0.2.7"), &members));
        assert!(!with_members.allows(ip("192.0.2.8"), &members));
    }

    #[test]
    fn api_url_hosts_are_found() {
        for (url, host) in [
            ("http://127.0.0.1:8008/patroni", Some("127.0.0.1")),
            ("https://db1.example:8008/patroni", Some("db1.example")),
            ("http://[::1]:8008/patroni", Some("::1")),
            ("http://user:pw@10.0.0.1/patroni", Some("10.0.0.1")),
            ("http://:8008/patroni", None),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }
}
