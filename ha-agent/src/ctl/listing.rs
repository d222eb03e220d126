//! `list`, `topology` and `history` as patronictl 3.0.2 prints them, computed from one
//! [`ClusterState`]. Pure: the commands read the DCS and print what these return.

use std::fmt::Write as _;

use dcs_core::ClusterState;
use dcs_core::model::{Initialize, MemberState};
use serde_json::{Map, Value};

use super::output::{self, Align, Format};
use super::time;

/// One member's line, with patronictl's column names as keys (`Cluster`, `Member`, `Host`,
/// `Role`, `State`, `TL`, `Lag in MB`, `Pending restart`, `Scheduled restart`, `Tags`).
type Row = Vec<(&'static str, Value)>;

/// What `list` shows of one cluster: the table's title, its columns and rows, and the
/// lines under the table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Listing {
    /// ` Cluster: <name> (<system id>) `.
    pub(crate) title: String,
    /// The columns, `Cluster` first.
    pub(crate) columns: Vec<&'static str>,
    /// One row per member (topology order for `topology`, else by name).
    pub(crate) rows: Vec<Vec<Value>>,
    /// `Maintenance mode: on`, `Switchover scheduled at: ...`.
    pub(crate) service_info: Vec<String>,
}

/// Patroni's `cluster_as_json` and `output_members`: roles, hosts, lag in MB against the
/// `status` key's optime, the optional columns when some member has a value (or always
/// with `extended`), replicas under their upstream when `topology`.
#[must_use]
#[allow(
    clippy::too_many_lines,
    reason = "patronictl's column rules in one pass read best together"
)]
pub(crate) fn listing(
    cluster: &ClusterState,
    name: &str,
    extended: bool,
    topology: bool,
) -> Listing {
    let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
    let standby = cluster
        .config
        .as_ref()
        .is_some_and(|c| c.value.valid && c.value.is_standby_cluster());
    let sync: &[String] = cluster
        .sync
        .as_ref()
        .map_or(&[], |s| s.value.sync_standby.as_slice());
    let cluster_lsn = cluster
        .status
        .as_ref()
        .and_then(|s| s.value.optime)
        .unwrap_or(0);

    let mut members: Vec<Entry> = cluster
        .members
        .iter()
        .map(|member| {
            let data = &member.data;
            let role = if Some(member.name.as_str()) == leader {
                if standby { "standby_leader" } else { "leader" }
            } else if sync.contains(&member.name) {
                "sync_standby"
            } else {
                "replica"
            };
            let lag = (Some(member.name.as_str()) != leader).then(|| match data.xlog_location {
                None => Value::from("unknown"),
                Some(lsn) => Value::from(mb(cluster_lsn.saturating_sub(lsn))),
            });
            let (host, port) = data.conn_url.as_deref().and_then(host_port).unzip();
            Entry {
                name: member.name.clone(),
                role,
                host,
                port,
                state: match &data.state {
                    MemberState::Unknown => String::new(),
                    state => state.as_str().to_owned(),
                },
                timeline: data.timeline,
                lag,
                pending_restart: data.extra.get("pending_restart").is_some_and(truthy),
                scheduled_restart: data.extra.get("scheduled_restart").and_then(scheduled),
                tags: data.tags.clone(),
                level: 0,
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    if topology {
        members = topology_order(members);
    }

    let with_host: Vec<&Entry> = members.iter().filter(|m| m.host.is_some()).collect();
    let mut columns = vec![
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Lag in MB",
    ];
    if extended || with_host.iter().any(|m| m.pending_restart) {
        columns.push("Pending restart");
    }
    if extended || with_host.iter().any(|m| m.scheduled_restart.is_some()) {
        columns.push("Scheduled restart");
    }
    if extended || with_host.iter().any(|m| !m.tags.is_empty()) {
        columns.push("Tags");
    }
    // Ports are shown when one differs from 5432 or two members share a host.
    let mut hosts: Vec<&str> = with_host.iter().filter_map(|m| m.host.as_deref()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let append_port =
        with_host.iter().any(|m| m.port != Some(5432)) || hosts.len() < with_host.len();

    let rows = members
        .iter()
        .map(|m| {
            let host = match (&m.host, m.port) {
                (Some(host), Some(port)) if append_port && !host.is_empty() => {
                    format!("{host}:{port}")
                }
                (host, _) => host.clone().unwrap_or_default(),
            };
            let indent = match m.level {
                0 => String::new(),
                level => format!("{}+ ", " ".repeat((level - 1) * 2)),
            };
            let row: Row = vec![
                ("Cluster", Value::from(name)),
                ("Member", Value::from(format!("{indent}{}", m.name))),
                ("Host", Value::from(host)),
                ("Role", Value::from(title_case(m.role))),
                ("State", Value::from(m.state.as_str())),
                (
                    "TL",
                    m.timeline.map_or_else(|| Value::from(""), Value::from),
                ),
                (
                    "Lag in MB",
                    m.lag.clone().unwrap_or_else(|| Value::from("")),
                ),
                (
                    "Pending restart",
                    Value::from(if m.pending_restart { "*" } else { "" }),
                ),
                (
                    "Scheduled restart",
                    Value::from(m.scheduled_restart.clone().unwrap_or_default()),
                ),
                (
                    "Tags",
                    if m.tags.is_empty() {
                        Value::from("")
                    } else {
                        Value::Object(m.tags.clone())
                    },
                ),
            ];
            columns
                .iter()
                .map(|column| {
                    row.iter()
                        .find(|(name, _)| name == column)
                        .map(|(_, value)| value.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();

    let initialize = match cluster.initialize.as_ref().map(|i| &i.value) {
        None => "uninitialized".to_owned(),
        Some(Initialize::Bootstrapping) => "initializing".to_owned(),
        Some(other) => other.to_value_string(),
    };
    Listing {
        title: format!(" Cluster: {name} ({initialize}) "),
        columns,
        rows,
        service_info: service_info(cluster),
    }
}

struct Entry {
    name: String,
    role: &'static str,
    host: Option<String>,
    port: Option<u16>,
    state: String,
    timeline: Option<u64>,
    lag: Option<Value>,
    pending_restart: bool,
    scheduled_restart: Option<String>,
    tags: Map<String, Value>,
    level: usize,
}

/// Patroni's `topology_sort`: the leader, then each replica under the member its
/// `replicatefrom` tag names (the leader when the tag names no other replica), depth
/// first. Members that a `replicatefrom` cycle cuts off from the leader, which patronictl
/// would leave out, come last at the first level.
fn topology_order(members: Vec<Entry>) -> Vec<Entry> {
    let leader = members
        .iter()
        .find(|m| m.role.ends_with("leader"))
        .map(|m| m.name.clone());
    let is_replica = |name: &str| {
        members
            .iter()
            .any(|m| m.name == name && !m.role.ends_with("leader"))
    };
    let parents: Vec<Option<String>> = members
        .iter()
        .map(|m| {
            if m.role.ends_with("leader") {
                return None;
            }
            match m.tags.get("replicatefrom").and_then(Value::as_str) {
                Some(parent) if parent != m.name && is_replica(parent) => Some(parent.to_owned()),
                _ => leader.clone(),
            }
        })
        .collect();

    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut visited = vec![false; members.len()];
    if let Some(at) = leader
        .as_ref()
        .and_then(|name| members.iter().position(|m| &m.name == name))
    {
        visited[at] = true;
        order.push((at, 0));
    }
    walk(
        &members,
        &parents,
        leader.as_deref(),
        &mut visited,
        &mut order,
    );
    let unreached: Vec<usize> = (0..members.len()).filter(|i| !visited[*i]).collect();
    order.extend(unreached.into_iter().map(|i| (i, 1)));

    let mut slots: Vec<Option<Entry>> = members.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(i, level)| {
            slots[i].take().map(|mut entry| {
                entry.level = level;
                entry
            })
        })
        .collect()
}

/// Appends the members under `start`, depth first, from level 1.
fn walk(
    members: &[Entry],
    parents: &[Option<String>],
    start: Option<&str>,
    visited: &mut [bool],
    order: &mut Vec<(usize, usize)>,
) {
    let mut stack: Vec<(usize, usize)> = children(members, parents, start)
        .into_iter()
        .rev()
        .map(|i| (i, 1))
        .collect();
    while let Some((i, level)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, level));
        stack.extend(
            children(members, parents, Some(&members[i].name))
                .into_iter()
                .rev()
                .map(|c| (c, level + 1)),
        );
    }
}

fn children(members: &[Entry], parents: &[Option<String>], parent: Option<&str>) -> Vec<usize> {
    (0..members.len())
        .filter(|i| !members[*i].role.ends_with("leader") && parents[*i].as_deref() == parent)
        .collect()
}

/// `host` and `port` (default 5432) of a `postgres://[user[:pw]@]host[:port]/db` URL, as
/// Python's `urlparse` reads them: the host lower-cased, IPv6 brackets removed.
pub(crate) fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => 5432,
        Some(port) => port.parse().ok()?,
    };
    Some((host.to_lowercase(), port))
}

/// Bytes → MB as Python's `round(lag / 1024 / 1024)`: to the nearest, ties to even.
fn mb(bytes: u64) -> u64 {
    const MB: u64 = 1024 * 1024;
    let (whole, rest) = (bytes / MB, bytes % MB);
    match rest.cmp(&(MB / 2)) {
        std::cmp::Ordering::Less => whole,
        std::cmp::Ordering::Greater => whole + 1,
        std::cmp::Ordering::Equal => whole + whole % 2,
    }
}

/// Python's `str.title()` after `_` → ` `: `sync_standby` → `Sync Standby`.
fn title_case(role: &str) -> String {
    role.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python truthiness of a JSON value.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A member's `scheduled_restart` as patronictl shows it: the schedule, and
/// `if version < X` when the restart is conditional.
fn scheduled(value: &Value) -> Option<String> {
    let object = value.as_object().filter(|o| !o.is_empty())?;
    let mut text = match object.get("schedule") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    if let Some(version) = object.get("postgres_version") {
        let version = version
            .as_str()
            .map_or_else(|| version.to_string(), str::to_owned);
        write!(text, " if version < {version}").expect("writing to a String cannot fail");
    }
    Some(text)
}

/// The lines under the table: maintenance mode and a scheduled switchover.
fn service_info(cluster: &ClusterState) -> Vec<String> {
    let mut info = Vec::new();
    if cluster.config.as_ref().is_some_and(|c| c.value.pause()) {
        info.push("Maintenance mode: on".to_owned());
    }
    if let Some(failover) = cluster.failover.as_ref().map(|f| &f.value) {
        if let Some(at) = &failover.scheduled_at {
            let at = time::Scheduled::parse(at, None).map_or_else(|_| at.clone(), |s| s.iso());
            let mut line = format!("Switchover scheduled at: {at}");
            for (label, name) in [("from", &failover.leader), ("to", &failover.candidate)] {
                if let Some(name) = name {
                    write!(line, "\n{label:>24}: {name}").expect("writing to a String cannot fail");
                }
            }
            info.push(line);
        }
    }
    info
}

/// Text of one cell in a table or TSV line; tags as YAML (block style in the pretty table,
/// flow style elsewhere, as patronictl does).
fn cell_text(value: &Value, block_tags: bool) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(_) => output::yaml(value, !block_tags).trim().to_owned(),
        other => other.to_string(),
    }
}

/// The whole output of `list` (or `topology`) for one cluster in `format`, without a
/// trailing newline.
#[must_use]
pub(crate) fn render(listing: &Listing, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => {
            // patronictl drops the cells that print as nothing.
            let elements: Vec<Value> = listing
                .rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = listing
                        .columns
                        .iter()
                        .zip(row)
                        .filter(|(_, value)| value.as_str() != Some(""))
                        .map(|(column, value)| ((*column).to_owned(), value.clone()))
                        .collect();
                    Value::Object(object)
                })
                .collect();
            let value = Value::Array(elements);
            if format == Format::Json {
                output::python_json(&value)
            } else {
                // click.echo adds a newline after PyYAML's own: a blank line follows.
                output::yaml(&value, false)
            }
        }
        Format::Tsv => {
            let rows: Vec<Vec<String>> = listing
                .rows
                .iter()
                .map(|row| row.iter().map(|v| cell_text(v, false)).collect())
                .collect();
            output::tsv(&listing.columns, &rows)
        }
        Format::Pretty | Format::Topology => {
            let block_tags = format == Format::Pretty;
            // The cluster name is in the title, not a column.
            let columns = &listing.columns[1..];
            let rows: Vec<Vec<String>> = listing
                .rows
                .iter()
                .map(|row| row[1..].iter().map(|v| cell_text(v, block_tags)).collect())
                .collect();
            let align: Vec<Align> = columns
                .iter()
                .map(|c| match *c {
                    "TL" | "Lag in MB" => Align::Right,
                    _ => Align::Left,
                })
                .collect();
            let mut text = output::pretty_table(Some(&listing.title), columns, &align, &rows);
            if !listing.service_info.is_empty() {
                text.push_str("\n ");
                text.push_str(&listing.service_info.join("\n "));
            }
            text
        }
    }
}

/// `history` in `format`: columns `TL`, `LSN`, `Reason`, `Timestamp`, `New Leader`, missing
/// fields empty.
#[must_use]
pub(crate) fn history(cluster: &ClusterState, format: Format) -> String {
    const COLUMNS: [&str; 5] = ["TL", "LSN", "Reason", "Timestamp", "New Leader"];
    let lines = cluster
        .history
        .as_ref()
        .map_or(&[][..], |h| h.value.lines.as_slice());
    let rows: Vec<Vec<Value>> = lines
        .iter()
        .map(|line| {
            vec![
                Value::from(line.timeline),
                Value::from(line.lsn),
                Value::from(line.reason.as_str()),
                Value::from(line.timestamp.clone().unwrap_or_default()),
                Value::from(line.new_leader.clone().unwrap_or_default()),
            ]
        })
        .collect();
    let text = |rows: &[Vec<Value>]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|row| row.iter().map(|v| cell_text(v, true)).collect())
            .collect()
    };
    match format {
        Format::Json | Format::Yaml => {
            let value = Value::Array(
                rows.iter()
                    .map(|row| {
                        Value::Object(
                            COLUMNS
                                .iter()
                                .zip(row)
                                .map(|(c, v)| ((*c).to_owned(), v.clone()))
                                .collect(),
                        )
                    })
                    .collect(),
            );
            if format == Format::Json {
                output::python_json(&value)
            } else {
                // click.echo adds a newline after PyYAML's own: a blank line follows.
                output::yaml(&value, false)
            }
        }
        Format::Tsv => output::tsv(&COLUMNS, &text(&rows)),
        Format::Pretty | Format::Topology => output::pretty_table(
            None,
            &COLUMNS,
            &[
                Align::Right,
                Align::Right,
                Align::Left,
                Align::Left,
                Align::Left,
            ],
            &text(&rows),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcs_core::model::RawEntry;
    use dcs_core::{Version, model::ClusterConfig};

    fn entry(key: &str, value: &str) -> RawEntry {
        RawEntry {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            version: Version::new(1),
            owner: None,
            created: 1,
        }
    }

    /// The cluster the expected texts below were printed from by patronictl 3.0.2.
    fn batman() -> ClusterState {
        ClusterState::from_entries([
            entry("initialize", "7268616322854375442"),
            entry(
                "config",
                r#"{"ttl":30,"loop_wait":10,"postgresql":{"parameters":{"max_connections":100}},"pause":true}"#,
            ),
            entry("leader", "pg0"),
            entry("status", r#"{"optime":67420024}"#),
            entry(
                "members/pg0",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":67420024,"timeline":2}"#,
            ),
            entry(
                "members/pg1",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","tags":{"clonefrom":true,"nofailover":true},"xlog_location":60000000,"replication_state":"streaming","timeline":2,"pending_restart":true}"#,
            ),
            entry(
                "members/pg2",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","api_url":"http://127.0.0.1:8010/patroni","state":"stopped","role":"replica","tags":{"replicatefrom":"pg1"}}"#,
            ),
            entry(
                "history",
                r#"[[1,25165984,"no recovery target specified","2024-09-24T12:00:00.123456+00:00","pg1"],[2,33554592,"no recovery target specified"]]"#,
            ),
            entry(
                "failover",
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2030-01-01T12:00:00+00:00"}"#,
            ),
        ])
    }

    #[test]
    fn list_prints_patronictls_table() {
        let text = render(&listing(&batman(), "batman", false, false), Format::Pretty);
        assert_eq!(
            text,
            "\
+ Cluster: batman (7268616322854375442) ------+----+-----------+-----------------+--------------------+
| Member | Host           | Role    | State   | TL | Lag in MB | Pending restart | Tags               |
+--------+----------------+---------+---------+----+-----------+-----------------+--------------------+
| pg0    | 127.0.0.1:5432 | Leader  | running |  2 |           |                 |                    |
+--------+----------------+---------+---------+----+-----------+-----------------+--------------------+
| pg1    | 127.0.0.1:5433 | Replica | running |  2 |         7 | *               | clonefrom: true    |
|        |                |         |         |    |           |                 | nofailover: true   |
+--------+----------------+---------+---------+----+-----------+-----------------+--------------------+
| pg2    | 127.0.0.1:5434 | Replica | stopped |    |   unknown |                 | replicatefrom: pg1 |
+--------+----------------+---------+---------+----+-----------+-----------------+--------------------+
 Maintenance mode: on
 Switchover scheduled at: 2030-01-01T12:00:00+00:00
                    from: pg0
                      to: pg1"
        );
    }

    #[test]
    fn list_json_and_tsv_match_patronictl() {
        let listing = listing(&batman(), "batman", false, false);
        assert_eq!(
            render(&listing, Format::Json),
            r#"[{"Cluster": "batman", "Member": "pg0", "Host": "127.0.0.1:5432", "Role": "Leader", "State": "running", "TL": 2}, {"Cluster": "batman", "Member": "pg1", "Host": "127.0.0.1:5433", "Role": "Replica", "State": "running", "TL": 2, "Lag in MB": 7, "Pending restart": "*", "Tags": {"clonefrom": true, "nofailover": true}}, {"Cluster": "batman", "Member": "pg2", "Host": "127.0.0.1:5434", "Role": "Replica", "State": "stopped", "Lag in MB": "unknown", "Tags": {"replicatefrom": "pg1"}}]"#
        );
        assert_eq!(
            render(&listing, Format::Tsv),
            "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\tPending restart\tTags\n\
             batman\tpg0\t127.0.0.1:5432\tLeader\trunning\t2\t\t\t\n\
             batman\tpg1\t127.0.0.1:5433\tReplica\trunning\t2\t7\t*\t{clonefrom: true, nofailover: true}\n\
             batman\tpg2\t127.0.0.1:5434\tReplica\tstopped\t\tunknown\t\t{replicatefrom: pg1}"
        );
    }

    #[test]
    fn topology_indents_replicas_under_their_upstream() {
        let text = render(&listing(&batman(), "batman", false, true), Format::Topology);
        assert_eq!(
            text.lines().take(6).collect::<Vec<_>>().join("\n"),
            "\
+ Cluster: batman (7268616322854375442) -------+----+-----------+-----------------+-------------------------------------+
| Member  | Host           | Role    | State   | TL | Lag in MB | Pending restart | Tags                                |
+---------+----------------+---------+---------+----+-----------+-----------------+-------------------------------------+
| pg0     | 127.0.0.1:5432 | Leader  | running |  2 |           |                 |                                     |
| + pg1   | 127.0.0.1:5433 | Replica | running |  2 |         7 | *               | {clonefrom: true, nofailover: true} |
|   + pg2 | 127.0.0.1:5434 | Replica | stopped |    |   unknown |                 | {replicatefrom: pg1}                |"
        );
    }

    #[test]
    fn an_empty_scope_lists_no_members() {
        let text = render(
            &listing(&ClusterState::default(), "other", false, false),
            Format::Pretty,
        );
        assert_eq!(
            text,
            "\
+ Cluster: other (uninitialized) ---+-----------+
| Member | Host | Role | State | TL | Lag in MB |
+--------+------+------+-------+----+-----------+
+--------+------+------+-------+----+-----------+"
        );
        let empty = listing(&ClusterState::default(), "other", false, false);
        assert_eq!(render(&empty, Format::Json), "[]");
    }

    #[test]
    fn roles_hosts_and_lag_follow_patroni() {
        let mut cluster = ClusterState::from_entries([
            entry("initialize", ""),
            entry("leader", "a"),
            entry("sync", r#"{"leader":"a","sync_standby":"b"}"#),
            entry("status", &format!("{}", 10 * 1024 * 1024 + 512 * 1024)),
            entry(
                "members/a",
                r#"{"conn_url":"postgres://DB1/postgres","state":"running","role":"primary"}"#,
            ),
            entry(
                "members/b",
                r#"{"conn_url":"postgres://db1:5432/postgres","xlog_location":1048576}"#,
            ),
            entry("members/c", r#"{"xlog_location":99999999}"#),
        ]);
        let text = render(&listing(&cluster, "x", false, false), Format::Tsv);
        // b: 9.5 MB rounds to even (10 would be 10.5 - 1); c: ahead of the leader reads 0;
        // two members on one host show ports; a member without conn_url has no host.
        assert_eq!(
            text,
            "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\n\
             x\ta\tdb1:5432\tLeader\trunning\t\t\n\
             x\tb\tdb1:5432\tSync Standby\t\t\t10\n\
             x\tc\t\tReplica\t\t\t0"
        );
        cluster.config = Some(dcs_core::model::Versioned {
            version: Version::new(1),
            value: ClusterConfig::parse(br#"{"standby_cluster":{"host":"remote"}}"#),
        });
        let standby = listing(&cluster, "x", false, false);
        assert_eq!(standby.rows[0][3], Value::from("Standby Leader"));
        assert_eq!(standby.title, " Cluster: x (initializing) ");
    }

    #[test]
    fn lag_rounds_half_to_even_like_python() {
        assert_eq!(mb(0), 0);
        assert_eq!(mb(512 * 1024), 0);
        assert_eq!(mb(512 * 1024 + 1), 1);
        assert_eq!(mb(3 * 512 * 1024), 2);
        assert_eq!(mb(6_000_000), 6);
        assert_eq!(mb(7_420_024), 7);
    }

    #[test]
    fn history_matches_patronictl() {
        assert_eq!(
            history(&batman(), Format::Pretty),
            "\
+----+----------+------------------------------+----------------------------------+------------+
| TL |      LSN | Reason                       | Timestamp                        | New Leader |
+----+----------+------------------------------+----------------------------------+------------+
|  1 | 25165984 | no recovery target specified | 2024-09-24T12:00:00.123456+00:00 | pg1        |
|  2 | 33554592 | no recovery target specified |                                  |            |
+----+----------+------------------------------+----------------------------------+------------+"
        );
        assert_eq!(
            history(&batman(), Format::Json),
            r#"[{"TL": 1, "LSN": 25165984, "Reason": "no recovery target specified", "Timestamp": "2024-09-24T12:00:00.123456+00:00", "New Leader": "pg1"}, {"TL": 2, "LSN": 33554592, "Reason": "no recovery target specified", "Timestamp": "", "New Leader": ""}]"#
        );
    }
}
