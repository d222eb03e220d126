//! The hosts' network: one namespace per node, a veth pair from each into a bridge in the
//! root namespace, and the faults on it (nftables drops between node addresses, netem).
//!
//! The harness keeps an address on the bridge (`.254`), so its clients reach every node
//! whatever the partition: rules only ever drop traffic between two node addresses.
//!
//! Names carry the harness's process id (`chaos<pid>n0`, `chb<pid>`, `chv<pid>n0`), so two
//! runs on one machine do not clash; the subnet `10.77.<octet>.0/24` is picked unused.
//! [`Network`]'s `Drop` deletes the namespaces (which takes their veth ends, rules and
//! qdiscs with them) and the bridge.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ChaosError;

/// The nftables table the partitions live in, one per node namespace.
const TABLE: &str = "chaos";

/// The namespaces, links and addresses of one run.
#[derive(Debug)]
pub struct Network {
    run: u32,
    octet: u8,
    nodes: usize,
    /// Whether the bridge was created (cleanup deletes only what exists).
    bridge_made: bool,
    /// Namespaces created so far, for cleanup.
    namespaces_made: usize,
}

impl Network {
    /// Creates `nodes` namespaces wired to a fresh bridge. On error, whatever was created
    /// is removed again (by `Drop`).
    pub fn create(nodes: usize) -> Result<Self, ChaosError> {
        let run = std::process::id();
        let mut network = Self {
            run,
            octet: free_octet(run)?,
            nodes,
            bridge_made: false,
            namespaces_made: 0,
        };
        let bridge = network.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        network.bridge_made = true;
        let harness = format!("{}/24", network.harness_address());
        ip(&["addr", "add", &harness, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let ns = network.namespace(i);
            ip(&["netns", "add", &ns])?;
            network.namespaces_made = i + 1;
            let veth = network.host_veth(i);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let address = format!("{}/24", network.address(i));
            in_ns(&ns, "ip", &["addr", "add", &address, "dev", "eth0"])?;
            in_ns(&ns, "ip", &["link", "set", "eth0", "up"])?;
            in_ns(&ns, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// How many nodes.
    #[must_use]
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node `i`'s namespace name.
    #[must_use]
    pub fn namespace(&self, i: usize) -> String {
        format!("chaos{}n{i}", self.run)
    }

    /// Node `i`'s address.
    #[must_use]
    pub fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.octet, u8::try_from(i + 1).expect("few nodes"))
    }

    /// The harness's own address on the bridge; never partitioned.
    #[must_use]
    pub fn harness_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.octet, 254)
    }

    /// The subnet, for `pg_hba`.
    #[must_use]
    pub fn subnet(&self) -> String {
        format!("10.77.{}.0/24", self.octet)
    }

    fn bridge(&self) -> String {
        format!("chb{}", self.run)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("chv{}n{i}", self.run)
    }

    /// Drops all traffic between the node pairs in `cut` (both directions), replacing any
    /// partition in place; an empty `cut` heals. Each namespace's table is replaced in one
    /// `nft -f` transaction.
    pub fn partition(&self, cut: &[(usize, usize)]) -> Result<(), ChaosError> {
        for i in 0..self.nodes {
            let peers: Vec<String> = cut
                .iter()
                .filter_map(|&(a, b)| match () {
                    () if a == i => Some(b),
                    () if b == i => Some(a),
                    () => None,
                })
                .map(|peer| self.address(peer).to_string())
                .collect();
            nft(&self.namespace(i), &ruleset(&peers))?;
        }
        Ok(())
    }

    /// Delays and drops packets to and from node `i` (netem on both ends of its veth).
    pub fn slow(&self, i: usize, delay_ms: u64, loss_percent: u64) -> Result<(), ChaosError> {
        let delay = format!("{delay_ms}ms");
        let jitter = format!("{}ms", delay_ms / 4);
        let loss = format!("{loss_percent}%");
        let args = [
            "qdisc", "replace", "dev", "DEV", "root", "netem", "delay", &delay, &jitter, "loss",
            &loss,
        ];
        let host = self.host_veth(i);
        let mut host_args = args;
        host_args[3] = &host;
        run("tc", &host_args)?;
        let mut ns_args = args;
        ns_args[3] = "eth0";
        in_ns(&self.namespace(i), "tc", &ns_args)
    }

    /// Removes node `i`'s netem qdiscs; a no-op when there are none.
    pub fn unslow(&self, i: usize) {
        let _ = run("tc", &["qdisc", "del", "dev", &self.host_veth(i), "root"]);
        let _ = in_ns(
            &self.namespace(i),
            "tc",
            &["qdisc", "del", "dev", "eth0", "root"],
        );
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.namespaces_made {
            if let Err(e) = ip(&["netns", "del", &self.namespace(i)]) {
                eprintln!("chaos: cleanup: {e}");
            }
        }
        if self.bridge_made
            && let Err(e) = ip(&["link", "del", &self.bridge()])
        {
            eprintln!("chaos: cleanup: {e}");
        }
    }
}

/// The nftables script that makes namespace's table drop exactly `peers`.
fn ruleset(peers: &[String]) -> String {
    // Declaring then deleting makes the script valid whether the table exists or not.
    let mut script = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !peers.is_empty() {
        let set = peers.join(", ");
        let _ = write!(
            script,
            "table inet {TABLE} {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
             \tchain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
    }
    script
}

/// A third octet no address on this machine uses yet, starting from one derived from the
/// process id.
fn free_octet(run: u32) -> Result<u8, ChaosError> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::io("running ip addr show", source))?;
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = run % 250;
    (0..250)
        .map(|k| u8::try_from((start + k) % 250 + 1).expect("below 251"))
        .find(|octet| !used.contains(&format!("10.77.{octet}.")))
        .ok_or_else(|| ChaosError::Setup("no free 10.77.x.0/24 subnet".to_owned()))
}

fn ip(args: &[&str]) -> Result<(), ChaosError> {
    run("ip", args)
}

/// Runs `program args` inside namespace `ns`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<(), ChaosError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Loads an nftables script into namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), ChaosError> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChaosError::io("running nft", source))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| ChaosError::io("writing to nft", source))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| ChaosError::io("waiting for nft", source))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Command {
            command: format!("ip netns exec {ns} nft -f - <<<{script:?}"),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs a short administrative command, an error quoting its output when it fails.
pub(super) fn run(program: &str, args: &[&str]) -> Result<(), ChaosError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::io(format!("running {program}"), source))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cut_only_removes_the_table() {
        let script = ruleset(&[]);
        assert_eq!(script, "table inet chaos\ndelete table inet chaos\n");
    }

    #[test]
    fn a_cut_drops_both_directions_of_the_named_peers() {
        let script = ruleset(&["10.77.3.2".to_owned(), "10.77.3.3".to_owned()]);
        assert!(
            script.contains("ip saddr { 10.77.3.2, 10.77.3.3 } drop"),
            "{script}"
        );
        assert!(
            script.contains("ip daddr { 10.77.3.2, 10.77.3.3 } drop"),
            "{script}"
        );
    }
}
