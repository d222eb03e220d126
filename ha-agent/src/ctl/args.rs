//! The command line, as patronictl's click definitions spell it: global options, one
//! command, its options and arguments. Pure: words in, an [`Invocation`] or a usage
//! error out.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::output::Format;

/// What `ha-agent ctl <args>` asked for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Invocation {
    /// Print this text and exit 0 (`--help`, or no command).
    Help(String),
    /// Run a command.
    Run(Global, Command),
}

/// Options before the command.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Global {
    /// `-c/--config-file`.
    pub(crate) config_file: Option<PathBuf>,
    /// `-d/--dcs-url/--dcs`.
    pub(crate) dcs_url: Option<String>,
}

/// Which members a `restart` or `reload` addresses (`-r/--role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoleFilter {
    /// `leader`: the lock holder, primary or standby leader.
    Leader,
    /// `primary` (`master`): the leader of a cluster that is not a standby cluster.
    Primary,
    /// `standby-leader`: the leader of a standby cluster.
    StandbyLeader,
    /// `replica` (`standby`): every member but the leader.
    Replica,
    /// `any`.
    Any,
}

impl RoleFilter {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "leader" => Self::Leader,
            "primary" | "master" => Self::Primary,
            "standby-leader" => Self::StandbyLeader,
            "replica" | "standby" => Self::Replica,
            "any" => Self::Any,
            _ => return None,
        })
    }

    /// The name patronictl's messages use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Primary => "primary",
            Self::StandbyLeader => "standby-leader",
            Self::Replica => "replica",
            Self::Any => "any",
        }
    }
}

/// One command with its options. A `cluster` of `None` means the configuration's `scope`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    /// `list` and `topology`.
    List {
        clusters: Vec<String>,
        extended: bool,
        timestamp: bool,
        format: Format,
        /// Seconds between refreshes (`-W`: 2, `-w N`).
        watch: Option<f64>,
    },
    /// `switchover`, and `failover --leader` (which patronictl turns into one).
    Switchover {
        cluster: Option<String>,
        leader: Option<String>,
        candidate: Option<String>,
        scheduled: Option<String>,
        force: bool,
        /// `failover` was typed: messages say so, the POST goes to `/failover`.
        as_failover: bool,
    },
    /// `pause` (`true`) and `resume` (`false`).
    Pause {
        cluster: Option<String>,
        pause: bool,
        wait: bool,
    },
    /// `show-config`.
    ShowConfig { cluster: Option<String> },
    /// `edit-config`.
    EditConfig {
        cluster: Option<String>,
        quiet: bool,
        set: Vec<String>,
        pg: Vec<String>,
        apply: Option<String>,
        replace: Option<String>,
        force: bool,
    },
    /// `history`.
    History {
        cluster: Option<String>,
        format: Format,
    },
    /// `restart`.
    Restart {
        cluster: String,
        members: Vec<String>,
        role: RoleFilter,
        any: bool,
        scheduled: Option<String>,
        pg_version: Option<String>,
        pending: bool,
        timeout: Option<String>,
        force: bool,
    },
    /// `reload`.
    Reload {
        cluster: String,
        members: Vec<String>,
        role: RoleFilter,
        force: bool,
    },
    /// `reinit`.
    Reinit {
        cluster: String,
        members: Vec<String>,
        force: bool,
        wait: bool,
    },
    /// `flush`.
    Flush {
        cluster: String,
        members: Vec<String>,
        target: FlushTarget,
        role: RoleFilter,
        force: bool,
    },
    /// `remove`.
    Remove { cluster: String, format: Format },
    /// `version`: without a cluster, only ctl's own version.
    Version {
        cluster: Option<String>,
        members: Vec<String>,
    },
    /// `dsn`.
    Dsn {
        cluster: Option<String>,
        role: Option<RoleFilter>,
        member: Option<String>,
    },
    /// `query` (boxed: its options outweigh every other command's).
    Query(Box<Query>),
}

/// What `flush` discards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushTarget {
    /// The members' scheduled restarts.
    Restart,
    /// The cluster's scheduled switchover.
    Switchover,
}

/// `query`'s options.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Query {
    pub(crate) cluster: Option<String>,
    /// `-r/--role`; with neither this nor `member`, the leader.
    pub(crate) role: Option<RoleFilter>,
    /// `-m/--member`.
    pub(crate) member: Option<String>,
    /// `-c/--command`.
    pub(crate) command: Option<String>,
    /// `-f/--file`.
    pub(crate) file: Option<PathBuf>,
    /// `-U/--username`.
    pub(crate) username: Option<String>,
    /// `--password`: prompt for one.
    pub(crate) password: bool,
    /// `-d/--dbname`.
    pub(crate) dbname: Option<String>,
    /// `--format`, tsv by default.
    pub(crate) format: Format,
    /// `--delimiter` of the tsv format.
    pub(crate) delimiter: String,
    /// Seconds between runs (`-W`: 2, `-w N`).
    pub(crate) watch: Option<f64>,
}

/// A command line that cannot be run: the message and the usage line of the command (or
/// of `ha-agent ctl`) it concerns. Exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsageError {
    /// `Usage: ... \nTry '... --help' for help.`
    pub(crate) usage: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n\nError: {}", self.usage, self.message)
    }
}

const PROGRAM: &str = "ha-agent ctl";

/// One option of a command: its spellings, whether it takes a value, its help.
struct Opt {
    names: &'static [&'static str],
    value: Option<&'static str>,
    help: &'static str,
}

const fn flag(names: &'static [&'static str], help: &'static str) -> Opt {
    Opt {
        names,
        value: None,
        help,
    }
}

const fn valued(names: &'static [&'static str], kind: &'static str, help: &'static str) -> Opt {
    Opt {
        names,
        value: Some(kind),
        help,
    }
}

const FORCE: Opt = flag(&["--force"], "Do not ask for confirmation at any point");
const FORMAT: Opt = valued(
    &["-f", "--format"],
    "TEXT",
    "Output format (pretty, tsv, json, yaml)",
);
const GROUP: Opt = valued(&["--group"], "INTEGER", "Citus group (not supported)");
const fn role(help: &'static str) -> Opt {
    valued(
        &["-r", "--role"],
        "[leader|primary|standby-leader|replica|standby|any|master]",
        help,
    )
}
const ROLE: Opt = role("Address only members with this role");
const WATCH_EVERY_2: Opt = flag(&["-W"], "Auto update the screen every 2 seconds");
const WATCH: Opt = valued(
    &["-w", "--watch"],
    "FLOAT",
    "Auto update the screen every X seconds",
);
const LEADER: Opt = valued(
    &["--leader", "--primary", "--master"],
    "TEXT",
    "The name of the current leader",
);
const CANDIDATE: Opt = valued(&["--candidate"], "TEXT", "The name of the candidate");

/// One command's grammar.
struct Spec {
    name: &'static str,
    arguments: &'static str,
    help: &'static str,
    options: &'static [Opt],
}

const SPECS: &[Spec] = &[
    Spec {
        name: "dsn",
        arguments: "[CLUSTER_NAME]",
        help: "Generate a dsn for the provided member, defaults to a dsn of the leader",
        options: &[
            role("Give a dsn of any member with this role"),
            valued(
                &["-m", "--member"],
                "TEXT",
                "Generate a dsn for this member",
            ),
            GROUP,
        ],
    },
    Spec {
        name: "edit-config",
        arguments: "[CLUSTER_NAME]",
        help: "Edit cluster configuration",
        options: &[
            GROUP,
            flag(&["-q", "--quiet"], "Do not show changes"),
            valued(
                &["-s", "--set"],
                "TEXT",
                "Set specific configuration value. Can be specified multiple times",
            ),
            valued(
                &["-p", "--pg"],
                "TEXT",
                "Set specific PostgreSQL parameter value. Shorthand for -s \
                 postgresql.parameters. Can be specified multiple times",
            ),
            valued(
                &["--apply"],
                "TEXT",
                "Apply configuration from file. Use - for stdin.",
            ),
            valued(
                &["--replace"],
                "TEXT",
                "Apply configuration from file, replacing existing configuration. Use - for \
                 stdin.",
            ),
            FORCE,
        ],
    },
    Spec {
        name: "failover",
        arguments: "[CLUSTER_NAME]",
        help: "Failover to a replica",
        options: &[GROUP, LEADER, CANDIDATE, FORCE],
    },
    Spec {
        name: "flush",
        arguments: "CLUSTER_NAME [MEMBER_NAMES]... {restart|switchover}",
        help: "Discard scheduled events",
        options: &[GROUP, role("Flush only members with this role"), FORCE],
    },
    Spec {
        name: "history",
        arguments: "[CLUSTER_NAME]",
        help: "Show the history of failovers/switchovers",
        options: &[GROUP, FORMAT],
    },
    Spec {
        name: "list",
        arguments: "[CLUSTER_NAMES]...",
        help: "List the Patroni members for a given Patroni",
        options: &[
            GROUP,
            flag(&["-e", "--extended"], "Show some extra information"),
            flag(&["-t", "--timestamp"], "Print timestamp"),
            FORMAT,
            WATCH_EVERY_2,
            WATCH,
        ],
    },
    Spec {
        name: "pause",
        arguments: "[CLUSTER_NAME]",
        help: "Disable auto failover",
        options: &[
            GROUP,
            flag(&["--wait"], "Wait until pause is applied on all nodes"),
        ],
    },
    Spec {
        name: "query",
        arguments: "[CLUSTER_NAME]",
        help: "Query a Patroni PostgreSQL member",
        options: &[
            GROUP,
            valued(
                &["--format"],
                "TEXT",
                "Output format (pretty, tsv, json, yaml)",
            ),
            valued(
                &["-f", "--file"],
                "FILENAME",
                "Execute the SQL commands from this file",
            ),
            flag(&["--password"], "force password prompt"),
            valued(&["-U", "--username"], "TEXT", "database user name"),
            WATCH_EVERY_2,
            WATCH,
            role("The role of the query"),
            valued(&["-m", "--member"], "TEXT", "Query a specific member"),
            valued(&["--delimiter"], "TEXT", "The column delimiter"),
            valued(&["-c", "--command"], "TEXT", "The SQL commands to execute"),
            valued(&["-d", "--dbname"], "TEXT", "database name to connect to"),
        ],
    },
    Spec {
        name: "reinit",
        arguments: "CLUSTER_NAME MEMBER_NAMES...",
        help: "Reinitialize cluster member",
        options: &[
            GROUP,
            FORCE,
            flag(&["--wait"], "Wait until reinitialization completes"),
        ],
    },
    Spec {
        name: "reload",
        arguments: "CLUSTER_NAME [MEMBER_NAMES]...",
        help: "Reload cluster member configuration",
        options: &[GROUP, ROLE, FORCE],
    },
    Spec {
        name: "remove",
        arguments: "CLUSTER_NAME",
        help: "Remove cluster from DCS",
        options: &[GROUP, FORMAT],
    },
    Spec {
        name: "restart",
        arguments: "CLUSTER_NAME [MEMBER_NAMES]...",
        help: "Restart cluster member",
        options: &[
            GROUP,
            ROLE,
            flag(&["--any"], "Restart a single member only"),
            valued(
                &["--scheduled"],
                "TEXT",
                "Timestamp of a scheduled restart in unambiguous format (e.g. ISO 8601)",
            ),
            valued(
                &["--pg-version"],
                "TEXT",
                "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)",
            ),
            flag(&["--pending"], "Restart if pending"),
            valued(
                &["--timeout"],
                "TEXT",
                "Return error and fail over if necessary when restarting takes longer than \
                 this.",
            ),
            FORCE,
        ],
    },
    Spec {
        name: "resume",
        arguments: "[CLUSTER_NAME]",
        help: "Resume auto failover",
        options: &[
            GROUP,
            flag(&["--wait"], "Wait until pause is cleared on all nodes"),
        ],
    },
    Spec {
        name: "show-config",
        arguments: "[CLUSTER_NAME]",
        help: "Show cluster configuration",
        options: &[GROUP],
    },
    Spec {
        name: "switchover",
        arguments: "[CLUSTER_NAME]",
        help: "Switchover to a replica",
        options: &[
            GROUP,
            LEADER,
            CANDIDATE,
            valued(
                &["--scheduled"],
                "TEXT",
                "Timestamp of a scheduled switchover in unambiguous format (e.g. ISO 8601)",
            ),
            FORCE,
        ],
    },
    Spec {
        name: "topology",
        arguments: "[CLUSTER_NAMES]...",
        help: "Prints ASCII topology for given cluster",
        options: &[GROUP, WATCH_EVERY_2, WATCH],
    },
    Spec {
        name: "version",
        arguments: "[CLUSTER_NAME] [MEMBER_NAMES]...",
        help: "Output version of patronictl command or a running Patroni instance",
        options: &[GROUP],
    },
];

/// The text of `ha-agent ctl --help`.
pub(crate) fn main_help() -> String {
    let mut text = format!(
        "Usage: {PROGRAM} [OPTIONS] COMMAND [ARGS]...\n\n  patronictl's commands for a \
         cluster run by ha-agent (or Patroni).\n\nOptions:\n"
    );
    text.push_str(&option_lines(&[
        ("-c, --config-file TEXT", "Configuration file"),
        ("-d, --dcs-url, --dcs TEXT", "The DCS connect url"),
        (
            "-k, --insecure",
            "Allow connections to SSL sites without certs",
        ),
        ("--help", "Show this message and exit."),
    ]));
    text.push_str("\nCommands:\n");
    let width = SPECS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for spec in SPECS {
        writeln!(text, "  {:width$}  {}", spec.name, spec.help)
            .expect("writing to a String cannot fail");
    }
    text.trim_end().to_owned()
}

fn command_help(spec: &Spec) -> String {
    let mut text = format!(
        "Usage: {PROGRAM} {} [OPTIONS] {}\n\n  {}\n\nOptions:\n",
        spec.name, spec.arguments, spec.help
    );
    let mut lines: Vec<(String, &str)> = spec
        .options
        .iter()
        .map(|o| {
            let names = o.names.join(", ");
            let left = match o.value {
                Some(kind) => format!("{names} {kind}"),
                None => names,
            };
            (left, o.help)
        })
        .collect();
    lines.push(("--help".to_owned(), "Show this message and exit."));
    let borrowed: Vec<(&str, &str)> = lines.iter().map(|(l, h)| (l.as_str(), *h)).collect();
    text.push_str(&option_lines(&borrowed));
    text.trim_end().to_owned()
}

fn option_lines(lines: &[(&str, &str)]) -> String {
    let width = lines
        .iter()
        .map(|(left, _)| left.len())
        .filter(|w| *w <= 30)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (left, help) in lines {
        if left.len() > width {
            writeln!(text, "  {left}\n  {:width$}  {help}", "")
                .expect("writing to a String cannot fail");
        } else {
            writeln!(text, "  {left:width$}  {help}").expect("writing to a String cannot fail");
        }
    }
    text
}

fn usage(spec: Option<&Spec>) -> String {
    match spec {
        Some(spec) => format!(
            "Usage: {PROGRAM} {} [OPTIONS] {}\nTry '{PROGRAM} {} --help' for help.",
            spec.name, spec.arguments, spec.name
        ),
        None => format!(
            "Usage: {PROGRAM} [OPTIONS] COMMAND [ARGS]...\nTry '{PROGRAM} --help' for help."
        ),
    }
}

/// The options and arguments of one command line, by canonical (first) option name.
struct Parsed {
    values: Vec<(&'static str, Option<String>)>,
    positionals: Vec<String>,
}

impl Parsed {
    fn flag(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| *n == name)
    }

    fn last(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
}

/// Parses `ha-agent ctl`'s arguments (without `ctl`).
pub(crate) fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let main_error = |message: String| UsageError {
        usage: usage(None),
        message,
    };
    let mut global = Global::default();
    let mut rest = args.iter();
    let command = loop {
        let Some(word) = rest.next() else {
            return Ok(Invocation::Help(main_help()));
        };
        let (name, inline) = split_inline(word);
        match name {
            "--help" | "-h" => return Ok(Invocation::Help(main_help())),
            "-k" | "--insecure" => {}
            "-c" | "--config-file" | "-d" | "--dcs-url" | "--dcs" => {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => rest.next().cloned().ok_or_else(|| {
                        main_error(format!("Option '{name}' requires an argument."))
                    })?,
                };
                if name.starts_with("-c") || name == "--config-file" {
                    global.config_file = Some(PathBuf::from(value));
                } else {
                    global.dcs_url = Some(value);
                }
            }
            _ if word.starts_with("-c") && word.len() > 2 => {
                global.config_file = Some(PathBuf::from(&word[2..]));
            }
            _ if word.starts_with("-d") && word.len() > 2 => {
                global.dcs_url = Some(word[2..].to_owned());
            }
            _ if word.starts_with('-') => {
                return Err(main_error(format!("No such option: {word}")));
            }
            _ => break word.as_str(),
        }
    };
    let spec = SPECS
        .iter()
        .find(|s| s.name == command)
        .ok_or_else(|| main_error(format!("No such command '{command}'.")))?;
    let words: Vec<String> = rest.cloned().collect();
    let Some(parsed) = parse_command(spec, &words)? else {
        return Ok(Invocation::Help(command_help(spec)));
    };
    let command = build(spec, &parsed)?;
    Ok(Invocation::Run(global, command))
}

fn split_inline(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((name, value)) if word.starts_with("--") => (name, Some(value)),
        _ => (word, None),
    }
}

/// `None` when `--help` was asked.
fn parse_command(spec: &Spec, words: &[String]) -> Result<Option<Parsed>, UsageError> {
    let error = |message: String| UsageError {
        usage: usage(Some(spec)),
        message,
    };
    let mut parsed = Parsed {
        values: Vec::new(),
        positionals: Vec::new(),
    };
    let mut words = words.iter();
    let mut options_done = false;
    while let Some(word) = words.next() {
        if options_done || !word.starts_with('-') || word == "-" {
            parsed.positionals.push(word.clone());
            continue;
        }
        if word == "--" {
            options_done = true;
            continue;
        }
        if word == "--help" {
            return Ok(None);
        }
        let (name, inline) = split_inline(word);
        // A short option may carry its value attached: `-fjson`.
        let (opt, inline) = if let Some(opt) = spec.options.iter().find(|o| o.names.contains(&name))
        {
            (opt, inline.map(str::to_owned))
        } else {
            let attached = (!word.starts_with("--") && word.len() > 2)
                .then(|| {
                    spec.options
                        .iter()
                        .find(|o| o.value.is_some() && o.names.contains(&&word[..2]))
                })
                .flatten();
            match attached {
                Some(opt) => (opt, Some(word[2..].to_owned())),
                None => return Err(error(format!("No such option: {name}"))),
            }
        };
        let value = match (opt.value, inline) {
            (None, Some(_)) => {
                return Err(error(format!("Option '{name}' does not take a value.")));
            }
            (None, None) => None,
            (Some(_), Some(value)) => Some(value),
            (Some(_), None) => Some(
                words
                    .next()
                    .cloned()
                    .ok_or_else(|| error(format!("Option '{name}' requires an argument.")))?,
            ),
        };
        parsed.values.push((opt.names[0], value));
    }
    Ok(Some(parsed))
}

#[allow(
    clippy::too_many_lines,
    reason = "one arm per command, each a few lines"
)]
fn build(spec: &Spec, p: &Parsed) -> Result<Command, UsageError> {
    let error = |message: String| UsageError {
        usage: usage(Some(spec)),
        message,
    };
    // `query` spells it `--format` alone: its `-f` is `--file`.
    let format = |default: Format| -> Result<Format, UsageError> {
        let (key, spelled) = if spec.name == "query" {
            ("--format", "'--format'")
        } else {
            ("-f", "'-f' / '--format'")
        };
        match p.last(key) {
            None => Ok(default),
            Some(text) => Format::parse(&text)
                .filter(|f| *f != Format::Topology)
                .ok_or_else(|| {
                    error(format!(
                        "Invalid value for {spelled}: '{text}' is not one of 'pretty', 'tsv', \
                         'json', 'yaml'."
                    ))
                }),
        }
    };
    let given_role = || -> Result<Option<RoleFilter>, UsageError> {
        p.last("-r")
            .map(|text| {
                RoleFilter::parse(&text).ok_or_else(|| {
                    error(format!(
                        "Invalid value for '-r' / '--role': '{text}' is not one of 'leader', \
                         'primary', 'standby-leader', 'replica', 'standby', 'any', 'master'."
                    ))
                })
            })
            .transpose()
    };
    let role = || -> Result<RoleFilter, UsageError> {
        given_role().map(|role| role.unwrap_or(RoleFilter::Any))
    };
    let watch = || -> Result<Option<f64>, UsageError> {
        match p.last("-w") {
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Some)
                .ok_or_else(|| {
                    error(format!(
                        "Invalid value for '-w' / '--watch': '{text}' is not a positive number."
                    ))
                }),
            None if p.flag("-W") => Ok(Some(2.0)),
            None => Ok(None),
        }
    };
    let at_most_one = || -> Result<Option<String>, UsageError> {
        match p.positionals.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            [_, extra, ..] => Err(error(format!("Got unexpected extra argument ({extra})"))),
        }
    };
    let cluster_and_members = || -> Result<(String, Vec<String>), UsageError> {
        match p.positionals.split_first() {
            Some((cluster, members)) => Ok((cluster.clone(), members.to_vec())),
            None => Err(error("Missing argument 'CLUSTER_NAME'.".to_owned())),
        }
    };
    if p.last("--group").is_some() {
        return Err(error(
            "--group: Citus clusters are not supported by ha-agent".to_owned(),
        ));
    }
    Ok(match spec.name {
        "list" | "topology" => Command::List {
            clusters: p.positionals.clone(),
            extended: p.flag("-e"),
            timestamp: p.flag("-t"),
            format: if spec.name == "topology" {
                Format::Topology
            } else {
                format(Format::Pretty)?
            },
            watch: watch()?,
        },
        "switchover" | "failover" => {
            let leader = p.last("--leader");
            Command::Switchover {
                cluster: at_most_one()?,
                // patronictl: a failover that names the leader is a switchover.
                as_failover: spec.name == "failover" && leader.is_none(),
                leader,
                candidate: p.last("--candidate"),
                scheduled: p.last("--scheduled"),
                force: p.flag("--force"),
            }
        }
        "pause" | "resume" => Command::Pause {
            cluster: at_most_one()?,
            pause: spec.name == "pause",
            wait: p.flag("--wait"),
        },
        "show-config" => Command::ShowConfig {
            cluster: at_most_one()?,
        },
        "edit-config" => Command::EditConfig {
            cluster: at_most_one()?,
            quiet: p.flag("-q"),
            set: p.all("-s"),
            pg: p.all("-p"),
            apply: p.last("--apply"),
            replace: p.last("--replace"),
            force: p.flag("--force"),
        },
        "history" => Command::History {
            cluster: at_most_one()?,
            format: format(Format::Pretty)?,
        },
        "restart" => {
            let (cluster, members) = cluster_and_members()?;
            Command::Restart {
                cluster,
                members,
                role: role()?,
                any: p.flag("--any"),
                scheduled: p.last("--scheduled"),
                pg_version: p.last("--pg-version"),
                pending: p.flag("--pending"),
                timeout: p.last("--timeout"),
                force: p.flag("--force"),
            }
        }
        "reload" => {
            let (cluster, members) = cluster_and_members()?;
            Command::Reload {
                cluster,
                members,
                role: role()?,
                force: p.flag("--force"),
            }
        }
        "reinit" => {
            let (cluster, members) = cluster_and_members()?;
            if members.is_empty() {
                return Err(error("Missing argument 'MEMBER_NAMES...'.".to_owned()));
            }
            Command::Reinit {
                cluster,
                members,
                force: p.flag("--force"),
                wait: p.flag("--wait"),
            }
        }
        "flush" => {
            let (cluster, rest) = cluster_and_members()?;
            let Some((target, members)) = rest.split_last() else {
                return Err(error(
                    "Missing argument '{restart|switchover}'. Choose from:\n\trestart,\n\t\
                     switchover"
                        .to_owned(),
                ));
            };
            let target = match target.as_str() {
                "restart" => FlushTarget::Restart,
                "switchover" => FlushTarget::Switchover,
                other => {
                    return Err(error(format!(
                        "Invalid value for '{{restart|switchover}}': '{other}' is not one of \
                         'restart', 'switchover'."
                    )));
                }
            };
            Command::Flush {
                cluster,
                members: members.to_vec(),
                target,
                role: role()?,
                force: p.flag("--force"),
            }
        }
        "remove" => {
            let Some(cluster) = at_most_one()? else {
                return Err(error("Missing argument 'CLUSTER_NAME'.".to_owned()));
            };
            Command::Remove {
                cluster,
                format: format(Format::Pretty)?,
            }
        }
        "version" => Command::Version {
            cluster: p.positionals.first().cloned(),
            members: p.positionals.iter().skip(1).cloned().collect(),
        },
        "dsn" => Command::Dsn {
            cluster: at_most_one()?,
            role: given_role()?,
            member: p.last("-m"),
        },
        "query" => Command::Query(Box::new(Query {
            cluster: at_most_one()?,
            role: given_role()?,
            member: p.last("-m"),
            command: p.last("-c"),
            file: p.last("-f").map(PathBuf::from),
            username: p.last("-U"),
            password: p.flag("--password"),
            dbname: p.last("-d"),
            format: format(Format::Tsv)?,
            delimiter: p.last("--delimiter").unwrap_or_else(|| "\t".to_owned()),
            watch: watch()?,
        })),
        other => unreachable!("every spec has a builder: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn run(line: &str) -> (Global, Command) {
        match parse(&words(line)).unwrap() {
            Invocation::Run(global, command) => (global, command),
            Invocation::Help(text) => panic!("help instead of a command: {text}"),
        }
    }

    fn usage_error(line: &str) -> UsageError {
        parse(&words(line)).unwrap_err()
    }

    #[test]
    fn global_options_come_before_the_command() {
        let (global, command) = run("-c /etc/p.yml --dcs-url=etcd3://h:2379 list -f json a b");
        assert_eq!(global.config_file, Some(PathBuf::from("/etc/p.yml")));
        assert_eq!(global.dcs_url.as_deref(), Some("etcd3://h:2379"));
        assert_eq!(
            command,
            Command::List {
                clusters: vec!["a".into(), "b".into()],
                extended: false,
                timestamp: false,
                format: Format::Json,
                watch: None,
            }
        );
        let (_, command) = run("list -fjson -e -W");
        assert!(matches!(
            command,
            Command::List { format: Format::Json, extended: true, watch: Some(w), .. } if (w - 2.0).abs() < f64::EPSILON
        ));
    }

    #[test]
    fn switchover_and_failover_take_patronictls_options() {
        let (_, command) = run("switchover batman --primary pg0 --candidate pg1 --force");
        assert_eq!(
            command,
            Command::Switchover {
                cluster: Some("batman".into()),
                leader: Some("pg0".into()),
                candidate: Some("pg1".into()),
                scheduled: None,
                force: true,
                as_failover: false,
            }
        );
        let (_, command) = run("failover --candidate pg1");
        assert!(matches!(
            command,
            Command::Switchover {
                as_failover: true,
                ..
            }
        ));
        let (_, command) = run("failover --master pg0 --candidate pg1");
        assert!(matches!(
            command,
            Command::Switchover {
                as_failover: false,
                ..
            }
        ));
    }

    #[test]
    fn edit_config_collects_repeated_settings() {
        let (_, command) = run("edit-config -s ttl=40 --set loop_wait=5 -p work_mem=8MB --force");
        assert_eq!(
            command,
            Command::EditConfig {
                cluster: None,
                quiet: false,
                set: vec!["ttl=40".into(), "loop_wait=5".into()],
                pg: vec!["work_mem=8MB".into()],
                apply: None,
                replace: None,
                force: true,
            }
        );
    }

    #[test]
    fn restart_needs_a_cluster_and_reinit_a_member() {
        let (_, command) = run("restart batman pg1 --role replica --pending --force");
        assert!(matches!(
            command,
            Command::Restart { ref cluster, ref members, role: RoleFilter::Replica, pending: true, force: true, .. }
                if cluster == "batman" && members == &["pg1".to_owned()]
        ));
        assert_eq!(
            usage_error("restart").message,
            "Missing argument 'CLUSTER_NAME'."
        );
        assert_eq!(
            usage_error("reinit batman").message,
            "Missing argument 'MEMBER_NAMES...'."
        );
    }

    #[test]
    fn mistakes_are_usage_errors_naming_the_command() {
        let error = usage_error("list --foo");
        assert_eq!(error.message, "No such option: --foo");
        assert!(
            error
                .usage
                .starts_with("Usage: ha-agent ctl list [OPTIONS]")
        );
        assert_eq!(usage_error("lst").message, "No such command 'lst'.");
        assert!(
            usage_error("list -f xml")
                .message
                .contains("'xml' is not one of")
        );
        assert!(usage_error("restart b -r boss").message.contains("'boss'"));
        assert_eq!(
            usage_error("list -f").message,
            "Option '-f' requires an argument."
        );
        assert_eq!(
            usage_error("pause --wait=yes").message,
            "Option '--wait' does not take a value."
        );
        assert_eq!(
            usage_error("show-config a b").message,
            "Got unexpected extra argument (b)"
        );
        assert!(usage_error("list --group 1").message.contains("Citus"));
        assert!(usage_error("list -w 0").message.contains("positive"));
        assert!(usage_error("-x list").usage.contains("ha-agent ctl --help"));
    }

    #[test]
    fn flush_takes_members_then_its_target() {
        let (_, command) = run("flush batman pg1 pg2 restart -r replica --force");
        assert_eq!(
            command,
            Command::Flush {
                cluster: "batman".into(),
                members: vec!["pg1".into(), "pg2".into()],
                target: FlushTarget::Restart,
                role: RoleFilter::Replica,
                force: true,
            }
        );
        let (_, command) = run("flush batman switchover");
        assert!(matches!(
            command,
            Command::Flush { target: FlushTarget::Switchover, role: RoleFilter::Any, force: false, ref members, .. }
                if members.is_empty()
        ));
        assert_eq!(
            usage_error("flush").message,
            "Missing argument 'CLUSTER_NAME'."
        );
        assert_eq!(
            usage_error("flush batman").message,
            "Missing argument '{restart|switchover}'. Choose from:\n\trestart,\n\tswitchover"
        );
        assert_eq!(
            usage_error("flush batman pg1 reboot").message,
            "Invalid value for '{restart|switchover}': 'reboot' is not one of 'restart', \
             'switchover'."
        );
    }

    #[test]
    fn remove_version_and_dsn_take_patronictls_arguments() {
        let (_, command) = run("remove batman -f json");
        assert_eq!(
            command,
            Command::Remove {
                cluster: "batman".into(),
                format: Format::Json,
            }
        );
        assert_eq!(
            usage_error("remove").message,
            "Missing argument 'CLUSTER_NAME'."
        );
        assert_eq!(
            usage_error("remove a b").message,
            "Got unexpected extra argument (b)"
        );
        assert_eq!(
            run("version").1,
            Command::Version {
                cluster: None,
                members: Vec::new(),
            }
        );
        assert_eq!(
            run("version batman pg0 pg1").1,
            Command::Version {
                cluster: Some("batman".into()),
                members: vec!["pg0".into(), "pg1".into()],
            }
        );
        assert_eq!(
            run("dsn batman -r replica").1,
            Command::Dsn {
                cluster: Some("batman".into()),
                role: Some(RoleFilter::Replica),
                member: None,
            }
        );
        assert_eq!(
            run("dsn -m pg1").1,
            Command::Dsn {
                cluster: None,
                role: None,
                member: Some("pg1".into()),
            }
        );
        assert!(usage_error("dsn -r boss").message.contains("'boss'"));
    }

    #[test]
    fn query_reads_its_options_with_tsv_by_default() {
        let (_, command) = run("query batman -c SELECT -U postgres -d app --password -m pg1");
        assert_eq!(
            command,
            Command::Query(Box::new(Query {
                cluster: Some("batman".into()),
                role: None,
                member: Some("pg1".into()),
                command: Some("SELECT".into()),
                file: None,
                username: Some("postgres".into()),
                password: true,
                dbname: Some("app".into()),
                format: Format::Tsv,
                delimiter: "\t".into(),
                watch: None,
            }))
        );
        // `-f` is the file; the format is `--format` alone.
        let (_, command) = run("query -f q.sql --format json --delimiter , -W");
        let Command::Query(query) = command else {
            panic!("not a query: {command:?}");
        };
        assert_eq!(query.file.as_deref(), Some(std::path::Path::new("q.sql")));
        assert_eq!(
            (query.format, query.delimiter.as_str(), query.watch),
            (Format::Json, ",", Some(2.0))
        );
        assert_eq!(
            usage_error("query --format xml -c x").message,
            "Invalid value for '--format': 'xml' is not one of 'pretty', 'tsv', 'json', 'yaml'."
        );
        assert_eq!(
            usage_error("query -c").message,
            "Option '-c' requires an argument."
        );
    }

    #[test]
    fn help_is_printed_for_the_program_and_each_command() {
        for line in ["", "--help", "-c x.yml --help"] {
            let Invocation::Help(text) = parse(&words(line)).unwrap() else {
                panic!("no help for {line:?}");
            };
            assert!(
                text.contains("  switchover   Switchover to a replica"),
                "{text}"
            );
            for name in ["dsn", "flush", "query", "remove", "version"] {
                assert!(text.contains(&format!("\n  {name} ")), "{name}: {text}");
            }
        }
        let Invocation::Help(text) = parse(&words("switchover --help")).unwrap() else {
            panic!("no help");
        };
        assert!(text.starts_with("Usage: ha-agent ctl switchover [OPTIONS] [CLUSTER_NAME]"));
        assert!(
            text.contains("--leader, --primary, --master TEXT"),
            "{text}"
        );
        let Invocation::Help(text) = parse(&words("flush --help")).unwrap() else {
            panic!("no help");
        };
        assert!(
            text.starts_with(
                "Usage: ha-agent ctl flush [OPTIONS] CLUSTER_NAME [MEMBER_NAMES]... \
                 {restart|switchover}\n\n  Discard scheduled events"
            ),
            "{text}"
        );
        assert!(text.contains("Flush only members with this role"), "{text}");
    }
}
