//! The running agent: the HA loop around [`decide`](crate::ha::decide), the dead-man
//! task, the REST API and the DCS connection.

use std::path::PathBuf;

use crate::config::Config;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Not implemented yet.
    #[error("not implemented yet")]
    NotImplemented,
}

/// Checks what `--validate-config` can check beyond the file itself.
///
/// # Errors
/// One line per problem.
pub fn check_environment(config: &Config) -> Result<(), Vec<String>> {
    let _ = config;
    Ok(())
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
/// [`AgentError`].
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), AgentError> {
    let _ = (config, config_path);
    Err(AgentError::NotImplemented)
}
