//! The status query over one kept connection, instead of a `psql` run every cycle.
//!
//! Starting `psql` (and a backend for it) each cycle was most of the agent's idle CPU.
//! The connection is opened on first use, reused while it lives, and dropped on any
//! error or missed deadline, so a restarted server is reached again on the next cycle.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// One kept connection, shared by the clones of a [`Postgres`](super::Postgres).
#[derive(Clone, Default)]
pub(crate) struct Session(Arc<Mutex<Option<Client>>>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session")
    }
}

impl Session {
    /// Closes the kept connection, if any (the next query opens another).
    pub(crate) async fn close(&self) {
        self.0.lock().await.take();
    }

    /// Runs `sql`, which returns one row, and gives its columns as `psql -A -t` prints
    /// them: joined by `|`, NULL as empty.
    pub(crate) async fn query_row(
        &self,
        config: &Config,
        sql: &str,
        deadline: Duration,
    ) -> Result<String, SessionError> {
        let mut kept = self.0.lock().await;
        let client = if let Some(client) = kept.take().filter(|c| !c.is_closed()) {
            client
        } else {
            let (client, connection) = tokio::time::timeout(deadline, config.connect(NoTls))
                .await
                .map_err(|_| SessionError::Timeout)?
                .map_err(|e| SessionError::Connect(e.to_string()))?;
            // The connection task ends when the client is dropped or the server goes.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        };
        let messages = tokio::time::timeout(deadline, client.simple_query(sql))
            .await
            .map_err(|_| SessionError::Timeout)?
            .map_err(|e| SessionError::Query(e.to_string()))?;
        // Kept only after a query that worked.
        *kept = Some(client);
        messages
            .iter()
            .find_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .ok_or_else(|| SessionError::Query("the query returned no row".to_owned()))
    }
}

/// Why the kept connection gave no row.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// No connection could be made (the server is down or starting, or the client cannot
    /// authenticate the way the server asks): `psql` may still get through.
    Connect(String),
    /// The query failed on an open connection (closed by a restart, an error).
    Query(String),
    /// No answer within the deadline: the server hangs, and `psql` would wait too.
    Timeout,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(why) => write!(f, "cannot connect: {why}"),
            Self::Query(why) => f.write_str(why),
            Self::Timeout => f.write_str("no answer in time"),
        }
    }
}
