//! The workload: one client per node, in the root namespace, inserting unique rows through
//! that node's PostgreSQL every 20–50 ms, and the [`Recorder`] that keeps the history.
//!
//! Each `INSERT` returns the timeline its commit was written on (the first 8 hex digits of
//! the WAL file name of `pg_current_wal_lsn()`), the epoch the single-writer checker
//! compares. Fencing tokens are not known to clients (the agent does not publish the
//! lock's token), so [`Op::token`] stays `None`.
//!
//! Outcomes: acknowledged → `Ok`; refused before anything could happen (connection or
//! prepare failed, read-only server) → `Failed`; sent without an answer (timeout,
//! connection lost, any other error) → `Unknown`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::cluster::{PG_PORT, SUPERUSER};
use super::nemesis::SplitMix64;
use crate::history::{FaultEvent, History, Op, OpKind, Outcome};

/// Connect and statement deadline: short, so a client notices a dead node quickly.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The write every client repeats.
const INSERT: &str = "INSERT INTO chaos_writes(id, node) VALUES ($1, $2) \
     RETURNING ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";

/// The table the workload writes.
pub const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS chaos_writes (id bigint PRIMARY KEY, node text NOT NULL)";

/// The history of a run as it is being recorded, shared by the clients and the nemesis.
#[derive(Debug, Default)]
pub struct Recorder {
    next_id: AtomicU64,
    history: Mutex<History>,
    /// The node that acknowledged the latest write: the nemesis's "primary".
    last_writer: Mutex<Option<usize>>,
}

impl Recorder {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn op(&self, op: Op, node: usize) {
        if op.outcome == Outcome::Ok {
            *self
                .last_writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(node);
        }
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ops
            .push(op);
    }

    /// The node that acknowledged the latest write, if any did.
    #[must_use]
    pub fn last_writer(&self) -> Option<usize> {
        *self
            .last_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a fault; returns its index for [`fault_ended`](Self::fault_ended).
    pub fn fault(&self, fault: FaultEvent) -> usize {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.faults.push(fault);
        history.faults.len() - 1
    }

    /// Marks fault `index` healed at `end`.
    pub fn fault_ended(&self, index: usize, end: Duration) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.faults[index].end = Some(end);
    }

    /// The history so far.
    #[must_use]
    pub fn history(&self) -> History {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a client reaches a node.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The node's index.
    pub node: usize,
    /// Its address.
    pub address: Ipv4Addr,
    /// The superuser's password.
    pub password: String,
}

impl Endpoint {
    fn name(&self) -> String {
        format!("node{}", self.node)
    }

    /// Connects with the short deadline; the connection runs on a spawned task.
    pub async fn connect(&self) -> Result<Client, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.address.to_string())
            .port(PG_PORT)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname("postgres")
            .application_name("chaos")
            .connect_timeout(TIMEOUT);
        let (client, connection) = tokio::time::timeout(TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// One client's loop: writes through `endpoint` until `stop` fires.
pub async fn client(
    endpoint: Endpoint,
    recorder: std::sync::Arc<Recorder>,
    origin: Instant,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = SplitMix64::new(seed ^ (endpoint.node as u64).wrapping_mul(0x9e37));
    let mut session: Option<(Client, tokio_postgres::Statement)> = None;
    let node = endpoint.name();
    let client_id = endpoint.node as u64;
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(rng.between(20, 50))).await;
        let id = recorder.next_id();
        let mut op = Op {
            id,
            client: client_id,
            node: node.clone(),
            kind: OpKind::Write,
            invoke: origin.elapsed(),
            complete: Duration::ZERO,
            outcome: Outcome::Failed,
            timeline: None,
            token: None,
            row: Some(id),
        };
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let Ok(prepared) = prepare(&endpoint).await else {
                // Nothing was sent: the write certainly did not happen.
                op.complete = origin.elapsed();
                recorder.op(op, endpoint.node);
                continue;
            };
            session = Some(prepared);
            op.invoke = origin.elapsed();
        }
        let Some((db, insert)) = session.as_ref() else {
            continue;
        };
        let row_id = i64::try_from(id).expect("ids fit in i64");
        let result = tokio::time::timeout(TIMEOUT, db.query_one(insert, &[&row_id, &node])).await;
        op.complete = origin.elapsed();
        match result {
            Ok(Ok(row)) => {
                op.outcome = Outcome::Ok;
                op.timeline = row
                    .try_get::<_, i32>(0)
                    .ok()
                    .and_then(|t| u64::try_from(t).ok());
            }
            Ok(Err(e)) if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                op.outcome = Outcome::Failed;
            }
            Ok(Err(_)) | Err(_) => {
                op.outcome = Outcome::Unknown;
                session = None;
            }
        }
        recorder.op(op, endpoint.node);
    }
}

async fn prepare(endpoint: &Endpoint) -> Result<(Client, tokio_postgres::Statement), String> {
    let client = endpoint.connect().await?;
    let insert = tokio::time::timeout(TIMEOUT, client.prepare(INSERT))
        .await
        .map_err(|_| "prepare timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((client, insert))
}

/// What a node's PostgreSQL says about itself, for the final check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Writable; with how many replicas stream from it.
    Primary {
        /// `pg_stat_replication` rows in state `streaming`.
        streaming: usize,
    },
    /// In recovery.
    Replica,
}

/// Asks node `endpoint`'s PostgreSQL for its role; `None` when it does not answer.
pub async fn role(endpoint: &Endpoint) -> Option<Role> {
    let client = endpoint.connect().await.ok()?;
    let query = "SELECT pg_is_in_recovery(), \
                 (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')";
    let row = tokio::time::timeout(TIMEOUT, client.query_one(query, &[]))
        .await
        .ok()?
        .ok()?;
    let in_recovery: bool = row.try_get(0).ok()?;
    let streaming: i64 = row.try_get(1).ok()?;
    Some(if in_recovery {
        Role::Replica
    } else {
        Role::Primary {
            streaming: usize::try_from(streaming).unwrap_or(0),
        }
    })
}

/// Runs one statement on a node (creating the table), with a deadline of a few seconds.
pub async fn execute(endpoint: &Endpoint, sql: &str) -> Result<(), String> {
    let client = endpoint.connect().await?;
    tokio::time::timeout(Duration::from_secs(10), client.batch_execute(sql))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// Every row id on a node.
pub async fn rows(endpoint: &Endpoint) -> Result<BTreeSet<u64>, String> {
    let client = endpoint.connect().await?;
    let rows = tokio::time::timeout(
        Duration::from_secs(30),
        client.query("SELECT id FROM chaos_writes", &[]),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<_, i64>(0).ok())
        .filter_map(|id| u64::try_from(id).ok())
        .collect())
}
