//! Running PostgreSQL's programs: as the server's account, with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use nix::unistd::{Uid, User};

use super::PostgresError;

/// The operating-system account PostgreSQL's programs run as.
///
/// PostgreSQL refuses to run as root, so an agent started as root runs every program
/// (`initdb`, `pg_ctl`, `psql`, ...) as this account and gives it the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    /// The login name (the numeric uid when the account has no name).
    pub name: String,
    /// The numeric user id.
    pub uid: u32,
    /// The numeric primary group id.
    pub gid: u32,
}

impl OsUser {
    /// The account this process runs as (effective ids).
    #[must_use]
    pub fn current() -> Self {
        let uid = Uid::effective();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |user| user.name);
        Self {
            name,
            uid: uid.as_raw(),
            gid: nix::unistd::Gid::effective().as_raw(),
        }
    }

    /// The account named `name` in the user database; `None` when there is none.
    pub fn by_name(name: &str) -> Result<Option<Self>, PostgresError> {
        let user = User::from_name(name).map_err(|errno| {
            PostgresError::io("looking up the account", name, std::io::Error::from(errno))
        })?;
        Ok(user.map(|user| Self {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
    }

    /// Whether this is the account the agent runs as (no switch needed).
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.uid == Uid::effective().as_raw()
    }
}

/// One program run: what, as whom, where, with which extra environment.
pub(crate) struct Run<'a> {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) user: &'a OsUser,
    pub(crate) dir: &'a Path,
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) timeout: Duration,
    /// The command as errors show it: passwords never reach an argument, but a conninfo
    /// might carry one, so callers choose what is shown.
    pub(crate) shown: String,
    /// Whether the output is parsed (labels of `pg_controldata`, values of `psql`).
    pub(crate) parsed: bool,
    /// What the program reads on its standard input (SQL, which may carry a password and
    /// so never goes into an argument, where every local user could read it).
    pub(crate) stdin: Option<String>,
}

impl Run<'_> {
    /// Runs the program to completion and returns its output when it succeeded.
    pub(crate) async fn output(self) -> Result<Output, PostgresError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out program must not outlive its deadline.
            .kill_on_drop(true)
            // The account may not be able to enter the agent's working directory.
            .current_dir(self.dir)
            .env("HOME", self.dir);
        if self.parsed {
            // Parsed output must not be translated. Only then: initdb takes the new
            // cluster's default locale from the environment, as under Patroni.
            command.env("LC_ALL", "C");
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if !self.user.is_current() {
            command.uid(self.user.uid).gid(self.user.gid);
        }
        let stdin = self.stdin;
        let run = async move {
            let mut child = command.spawn()?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                use tokio::io::AsyncWriteExt as _;
                // Small inputs (SQL): they fit the pipe, so writing before reading cannot
                // deadlock against a child filling its stdout.
                pipe.write_all(text.as_bytes()).await?;
            }
            child.wait_with_output().await
        };
        let output = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(PostgresError::NotInstalled {
                    program: self.program,
                });
            }
            Ok(Err(source)) => return Err(PostgresError::io("running", self.program, source)),
            Err(_) => {
                return Err(PostgresError::Timeout {
                    command: self.shown,
                    after: self.timeout,
                });
            }
        };
        if output.status.success() {
            Ok(output)
        } else {
            Err(PostgresError::Failed {
                command: self.shown,
                status: output.status,
                output: tail(&output),
            })
        }
    }
}

/// The last lines of what a failed program said: stderr, else stdout.
fn tail(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
