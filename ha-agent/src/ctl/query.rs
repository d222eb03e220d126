//! `dsn` and `query`: a member's PostgreSQL, at the `conn_url` its member key publishes.
//!
//! `query` connects as patronictl's psycopg connection does: host and port from the
//! `conn_url`, everything else from the command line or libpq's environment (`PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME`), never from the cluster's configuration; no
//! TLS, no `~/.pgpass`. The SQL runs with the simple query protocol (several statements
//! allowed, autocommit); the last statement's rows are printed.

use crate::python::python_str;
use std::time::{Duration, SystemTime};

use dcs_core::{ClusterState, Member};
use serde_json::{Map, Number, Value};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use super::args::{Query, RoleFilter};
use super::output::{self, Align, Format};
use super::{Context, Opened, Result, listing, members_with_role, prompt, time};

/// patronictl's `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The member `dsn` and `query` address (patronictl's `get_any_member` arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// The first member with this role; `leader` unless told otherwise.
    Role(RoleFilter),
    /// This member, whatever its role.
    Member(String),
}

impl Target {
    fn new(role: Option<RoleFilter>, member: Option<String>) -> Result<Self> {
        match (role, member) {
            (Some(_), Some(_)) => Err("--role and --member are mutually exclusive options".into()),
            (None, Some(member)) => Ok(Self::Member(member)),
            (role, None) => Ok(Self::Role(role.unwrap_or(RoleFilter::Leader))),
        }
    }

    fn pick<'a>(&self, state: &'a ClusterState) -> Option<&'a Member> {
        match self {
            Self::Role(role) => members_with_role(state, *role).into_iter().next(),
            Self::Member(name) => state.members.iter().find(|m| &m.name == name),
        }
    }

    /// Whether PostgreSQL's `pg_is_in_recovery()` fits the role: the member key may be
    /// stale, the server is not.
    fn accepts(&self, in_recovery: bool) -> bool {
        match self {
            Self::Role(RoleFilter::Replica | RoleFilter::StandbyLeader) => in_recovery,
            Self::Role(RoleFilter::Primary) => !in_recovery,
            Self::Role(RoleFilter::Leader | RoleFilter::Any) | Self::Member(_) => true,
        }
    }

    fn needs_recovery_check(&self) -> bool {
        !matches!(
            self,
            Self::Role(RoleFilter::Leader | RoleFilter::Any) | Self::Member(_)
        )
    }

    fn unavailable(&self) -> String {
        match self {
            Self::Member(name) => format!("No connection to member {name} is available"),
            Self::Role(role) => format!("No connection to role={} is available", role.as_str()),
        }
    }
}

/// `host` and `port` of `member`'s `conn_url`, as Python's `urlparse` reads them.
fn host_port(member: &Member) -> Result<(String, u16)> {
    member
        .data
        .conn_url
        .as_deref()
        .and_then(listing::host_port)
        .ok_or_else(|| format!("member {} publishes no usable conn_url", member.name))
}

pub(super) async fn dsn(
    ctx: &Context,
    cluster: Option<&str>,
    role: Option<RoleFilter>,
    member: Option<String>,
) -> Result<()> {
    let target = Target::new(role, member)?;
    let opened = ctx.open(cluster).await?;
    let state = opened.read().await?;
    let member = target
        .pick(&state)
        .ok_or("Can not find a suitable member")?;
    let (host, port) = host_port(member)?;
    println!("host={host} port={port}");
    Ok(())
}

/// What the command line and the environment say about the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Login {
    user: String,
    password: Option<String>,
    dbname: String,
    application_name: String,
}

impl Login {
    /// libpq's defaults: `PGUSER` else the OS account, `PGDATABASE` else the user name,
    /// `PGPASSWORD`, and `Patroni ctl` as the fallback application name.
    fn new(
        query: &Query,
        password: Option<String>,
        vars: &[(String, String)],
        os_user: Option<String>,
    ) -> Self {
        let var = |name: &str| {
            vars.iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let user = query
            .username
            .clone()
            .or_else(|| var("PGUSER"))
            .or(os_user)
            .unwrap_or_else(|| "postgres".to_owned());
        Self {
            dbname: query
                .dbname
                .clone()
                .or_else(|| var("PGDATABASE"))
                .unwrap_or_else(|| user.clone()),
            user,
            password: password.or_else(|| var("PGPASSWORD")),
            application_name: var("PGAPPNAME").unwrap_or_else(|| "Patroni ctl".to_owned()),
        }
    }

    fn config(&self, host: &str, port: u16) -> Config {
        let mut config = Config::new();
        config
            .host(host)
            .port(port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

fn os_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// One run's result: a table to print, and whether it is a failure (exit code 1).
#[derive(Clone, Debug, PartialEq)]
struct Answer {
    /// `None`: patronictl's message row, printed without a header.
    columns: Option<Vec<String>>,
    rows: Vec<Vec<Value>>,
    /// Why this run failed, for stderr.
    failure: Option<String>,
}

impl Answer {
    /// patronictl's `[timestamp, message]` row.
    fn message(text: &str, failure: Option<String>) -> Self {
        Self {
            columns: None,
            rows: vec![vec![
                Value::from(time::timestamp(SystemTime::now(), false)),
                Value::from(text.replace('\n', " ")),
            ]],
            failure,
        }
    }

    /// No member fits `target`, or its server is not in the role asked for.
    fn unavailable(target: &Target) -> Self {
        let text = target.unavailable();
        Self::message(&text, Some(text.clone()))
    }

    fn error(message: &str) -> Self {
        Self::message(
            &format!("ERROR, SQLSTATE: {message}"),
            Some(message.to_owned()),
        )
    }
}

pub(super) async fn query(ctx: &Context, query: Query) -> Result<()> {
    let target = Target::new(query.role, query.member.clone())?;
    let sql = match (&query.file, &query.command) {
        (Some(_), Some(_)) => {
            return Err("--file and --command are mutually exclusive options".into());
        }
        (None, None) => return Err("You need to specify either --command or --file".into()),
        (None, Some(command)) => command.clone(),
        (Some(path), None) => tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let password = if query.password {
        Some(prompt("Password", true).await?)
    } else {
        None
    };
    let login = Login::new(&query, password, &ctx.vars, os_user());
    let opened = ctx.open(query.cluster.as_deref()).await?;
    loop {
        let answer = run(&opened, &target, &login, &sql).await?;
        println!(
            "{}",
            render(
                answer.columns.as_deref(),
                &answer.rows,
                query.format,
                &query.delimiter
            )
        );
        let Some(seconds) = query.watch else {
            return answer.failure.map_or(Ok(()), Err);
        };
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
}

/// patronictl's `query_member`: picks the member, connects, checks its role, runs `sql`.
/// Only a DCS failure is an error; everything else is an answer to print.
async fn run(opened: &Opened, target: &Target, login: &Login, sql: &str) -> Result<Answer> {
    let state = opened.read().await?;
    let Some(member) = target.pick(&state) else {
        return Ok(Answer::unavailable(target));
    };
    let (host, port) = match host_port(member) {
        Ok(address) => address,
        Err(error) => return Ok(Answer::error(&error)),
    };
    let client = match connect(&login.config(&host, port)).await {
        Ok(client) => client,
        Err(error) => return Ok(Answer::error(&error)),
    };
    if target.needs_recovery_check() {
        match in_recovery(&client).await {
            Ok(in_recovery) if target.accepts(in_recovery) => {}
            Ok(_) => return Ok(Answer::unavailable(target)),
            Err(error) => return Ok(database_error(&error)),
        }
    }
    Ok(execute(&client, sql).await)
}

async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| "timeout expired".to_owned())?
        .map_err(|e| e.to_string())?;
    // The connection task ends when the client is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn in_recovery(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let messages = client
        .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
        .await?;
    Ok(messages
        .iter()
        .any(|message| matches!(message, SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))))
}

/// psycopg's report of a failed statement: the SQLSTATE, else the message.
fn database_error(error: &tokio_postgres::Error) -> Answer {
    let full = error
        .as_db_error()
        .map_or_else(|| error.to_string(), ToString::to_string);
    let mut answer = Answer::error(error.code().map_or(full.as_str(), |c| c.code()));
    answer.failure = Some(full);
    answer
}

/// One statement's rows as the server sent them (NULL as `None`).
struct TextResult {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

/// Runs `sql` with the simple query protocol (as psycopg does: several statements, no
/// parameters) and keeps the last statement's rows. A user's SQL may take as long as it
/// takes: no deadline here, as in patronictl.
async fn execute(client: &Client, sql: &str) -> Answer {
    // Describing the statement gives the column types, so that values print as psycopg
    // converts them (True, 42, None). Several statements cannot be described: they print
    // as text.
    let types: Option<Vec<Type>> = client.prepare(sql).await.ok().map(|statement| {
        statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect()
    });
    let messages = match client.simple_query(sql).await {
        Ok(messages) => messages,
        Err(error) => return database_error(&error),
    };
    // Each statement's rows: a description, the rows, then its completion.
    let mut last = None;
    let mut open: Option<TextResult> = None;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                open = Some(TextResult {
                    columns: columns.iter().map(|c| c.name().to_owned()).collect(),
                    rows: Vec::new(),
                });
            }
            SimpleQueryMessage::Row(row) => {
                if let Some(result) = &mut open {
                    let values = (0..row.len()).map(|i| row.get(i).map(str::to_owned));
                    result.rows.push(values.collect());
                }
            }
            SimpleQueryMessage::CommandComplete(_) => last = Some(open.take()),
            _ => {}
        }
    }
    let Some(Some(TextResult { columns, rows })) = last else {
        // psycopg's fetchall() after a statement without rows; the statement did run.
        return Answer::message("ERROR, SQLSTATE: no results to fetch", None);
    };
    let types = types.filter(|t| t.len() == columns.len());
    let rows = rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .enumerate()
                .map(|(i, text)| typed(text, types.as_ref().map(|t| &t[i])))
                .collect()
        })
        .collect();
    Answer {
        columns: Some(columns),
        rows,
        failure: None,
    }
}

/// A value as psycopg hands it to Python: NULL as `None`, booleans, integers and floats as
/// such, everything else as PostgreSQL's text.
fn typed(text: Option<String>, ty: Option<&Type>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    let converted = match ty {
        Some(ty) if *ty == Type::BOOL => match text.as_str() {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        Some(ty) if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(ty) => {
            text.parse::<i64>().ok().map(Value::from)
        }
        Some(ty) if *ty == Type::FLOAT4 || *ty == Type::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number),
        _ => None,
    };
    converted.unwrap_or(Value::String(text))
}

/// patronictl's `print_output` for `query`: `columns` of `None` is its header-less message
/// row (`PrettyTable`'s `Field 1`, `Field 2` where a header is needed).
fn render(
    columns: Option<&[String]>,
    rows: &[Vec<Value>],
    format: Format,
    delimiter: &str,
) -> String {
    let width = rows.first().map_or(0, Vec::len);
    let names: Vec<String> = columns.map_or_else(
        || (1..=width).map(|i| format!("Field {i}")).collect(),
        <[String]>::to_vec,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let texts = || -> Vec<Vec<String>> {
        rows.iter()
            .map(|row| row.iter().map(python_str).collect())
            .collect()
    };
    match format {
        Format::Json | Format::Yaml => {
            let elements = rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = names
                        .iter()
                        .zip(row)
                        .map(|(name, value)| ((*name).to_owned(), value.clone()))
                        .collect();
                    Value::Object(object)
                })
                .collect();
            if format == Format::Json {
                output::python_json(&Value::Array(elements))
            } else {
                output::yaml(&Value::Array(elements), false)
            }
        }
        Format::Tsv => {
            let header = columns.map(|c| c.join(delimiter));
            header
                .into_iter()
                .chain(texts().iter().map(|row| row.join(delimiter)))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Format::Pretty | Format::Topology => {
            output::pretty_table(None, &names, &vec![Align::Left; names.len()], &texts())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query() -> Query {
        Query {
            cluster: None,
            role: None,
            member: None,
            command: Some("SELECT 1".to_owned()),
            file: None,
            username: None,
            password: false,
            dbname: None,
            format: Format::Tsv,
            delimiter: "\t".to_owned(),
            watch: None,
        }
    }

    #[test]
    fn targets_default_to_the_leader_and_exclude_each_other() {
        assert_eq!(
            Target::new(None, None),
            Ok(Target::Role(RoleFilter::Leader))
        );
        assert_eq!(
            Target::new(None, Some("pg1".into())),
            Ok(Target::Member("pg1".into()))
        );
        assert_eq!(
            Target::new(Some(RoleFilter::Replica), Some("pg1".into())),
            Err("--role and --member are mutually exclusive options".to_owned())
        );
        assert!(!Target::Role(RoleFilter::Replica).accepts(false));
        assert!(Target::Role(RoleFilter::Primary).accepts(false));
        assert_eq!(
            Target::Role(RoleFilter::Replica).unavailable(),
            "No connection to role=replica is available"
        );
    }

    #[test]
    fn logins_take_libpqs_defaults() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let login = Login::new(&query(), None, &[], Some("alice".to_owned()));
        assert_eq!(
            login,
            Login {
                user: "alice".into(),
                password: None,
                dbname: "alice".into(),
                application_name: "Patroni ctl".into(),
            }
        );
        let env = vars(&[
            ("PGUSER", "bob"),
            ("PGPASSWORD", "pw"),
            ("PGDATABASE", "db"),
        ]);
        let login = Login::new(&query(), None, &env, Some("alice".to_owned()));
        assert_eq!(
            (
                login.user.as_str(),
                login.password.as_deref(),
                login.dbname.as_str()
            ),
            ("bob", Some("pw"), "db")
        );
        let mut given = query();
        given.username = Some("carol".into());
        given.dbname = Some("app".into());
        let login = Login::new(&given, Some("typed".into()), &env, None);
        assert_eq!(
            (
                login.user.as_str(),
                login.password.as_deref(),
                login.dbname.as_str()
            ),
            ("carol", Some("typed"), "app")
        );
    }

    #[test]
    fn values_convert_as_psycopg_does() {
        assert_eq!(typed(None, Some(&Type::TEXT)), Value::Null);
        assert_eq!(typed(Some("t".into()), Some(&Type::BOOL)), json!(true));
        assert_eq!(typed(Some("42".into()), Some(&Type::INT8)), json!(42));
        assert_eq!(typed(Some("1".into()), Some(&Type::FLOAT8)), json!(1.0));
        assert_eq!(typed(Some("42".into()), None), json!("42"));
        assert_eq!(typed(Some("NaN".into()), Some(&Type::FLOAT8)), json!("NaN"));
        let texts: Vec<String> = [json!(null), json!(true), json!(1.0), json!(7), json!("x")]
            .iter()
            .map(python_str)
            .collect();
        assert_eq!(texts, ["None", "True", "1.0", "7", "x"]);
    }

    #[test]
    fn results_print_in_each_format() {
        let columns = vec!["?column?".to_owned(), "name".to_owned()];
        let rows = vec![vec![json!(1), json!("pg0")], vec![json!(2), Value::Null]];
        assert_eq!(
            render(Some(&columns), &rows, Format::Tsv, "\t"),
            "?column?\tname\n1\tpg0\n2\tNone"
        );
        assert_eq!(
            render(Some(&columns), &rows, Format::Tsv, ","),
            "?column?,name\n1,pg0\n2,None"
        );
        assert_eq!(
            render(Some(&columns), &rows, Format::Json, "\t"),
            r#"[{"?column?": 1, "name": "pg0"}, {"?column?": 2, "name": null}]"#
        );
        assert_eq!(
            render(Some(&columns), &rows, Format::Pretty, "\t"),
            "+----------+------+\n| ?column? | name |\n+----------+------+\n| 1        | pg0  |\n\
             | 2        | None |\n+----------+------+"
        );
        assert_eq!(
            render(Some(&columns), &rows, Format::Yaml, "\t"),
            "- ?column?: 1\n  name: pg0\n- ?column?: 2\n  name: null\n"
        );
        let message = vec![vec![
            json!("2024-01-01 00:00:00"),
            json!("ERROR, SQLSTATE: 42P01"),
        ]];
        assert_eq!(
            render(None, &message, Format::Tsv, "\t"),
            "2024-01-01 00:00:00\tERROR, SQLSTATE: 42P01"
        );
        assert!(
            render(None, &message, Format::Pretty, "\t")
                .contains("| Field 1             | Field 2 ")
        );
    }
}
