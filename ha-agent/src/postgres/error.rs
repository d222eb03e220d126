//! The one error of PostgreSQL control.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong controlling the local PostgreSQL.
///
/// Callers branch on the variant: [`NotInstalled`](Self::NotInstalled) and
/// [`Io`](Self::Io) are the host's problem and will not fix themselves;
/// [`Timeout`](Self::Timeout) means the program was killed and the server's state is
/// unknown (observe again before acting); [`Failed`](Self::Failed) carries what the program
/// said; [`Unexpected`](Self::Unexpected) is output this module cannot read (a version it
/// does not know, or a bug).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// A PostgreSQL program is missing (wrong `bin_dir`, package not installed).
    #[error("{program} not found (set postgresql.bin_dir)")]
    NotInstalled {
        /// The program as it was run.
        program: PathBuf,
    },
    /// A program did not finish within its deadline and was killed.
    #[error("{command} did not finish within {after:?}")]
    Timeout {
        /// The command, without passwords.
        command: String,
        /// The deadline it had.
        after: Duration,
    },
    /// A program exited unsuccessfully.
    #[error("{command} failed ({status}): {output}")]
    Failed {
        /// The command, without passwords.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its standard error (or output when that is empty).
        output: String,
    },
    /// A file or directory could not be read, written or given to the server's account, or
    /// a program could not be started.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file, directory or program.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The operation needs an empty (or missing) data directory and it has files.
    #[error("data directory {} is not empty", path.display())]
    DataDirNotEmpty {
        /// The data directory.
        path: PathBuf,
    },
    /// Output this module cannot read.
    #[error("unexpected output from {command}: {output:?}")]
    Unexpected {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
}

impl PostgresError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
