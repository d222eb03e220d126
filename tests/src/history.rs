//! The history of a chaos run or a simulation: every client operation with its invoke and
//! complete times and outcome, and every fault injected, as [`Op`]s and [`FaultEvent`]s.
//!
//! Times are offsets on the harness's own monotonic clock since the run started (the
//! simulation's paused tokio clock, or the chaos harness's `Instant`), never wall-clock
//! time: a checker compares them with each other only.
//!
//! A history is stored as JSON lines (`history.jsonl`), one record per line, each an
//! object with a `type` of `op` or `fault`:
//!
//! ```text
//! {"type":"op","id":7,"client":1,"node":"pg1","kind":"write","invoke_ns":2000000000,
//!  "complete_ns":2010000000,"outcome":"ok","timeline":2,"token":41,"row":7}
//! {"type":"fault","kind":"partition","target":"pg0","start_ns":30000000000,"end_ns":null}
//! ```
//!
//! Durations are whole nanoseconds, so a history written and read back is the same
//! history.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One client operation against one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique in the history.
    pub id: u64,
    /// The client that issued it; a client has at most one operation in flight.
    pub client: u64,
    /// The node (member name) whose PostgreSQL the client talked to.
    pub node: String,
    /// What the operation did.
    pub kind: OpKind,
    /// When the client sent it.
    #[serde(rename = "invoke_ns", with = "nanos")]
    pub invoke: Duration,
    /// When the client got its answer, or gave up on one.
    #[serde(rename = "complete_ns", with = "nanos")]
    pub complete: Duration,
    /// How it ended, as the client saw it.
    pub outcome: Outcome,
    /// The PostgreSQL timeline the write committed on, when the answer said (the chaos
    /// harness reads the first 8 hex digits of `pg_walfile_name(pg_current_wal_lsn())`
    /// returned by the `INSERT`). Each timeline has exactly one primary in a healthy
    /// cluster, which is what the single-writer checker relies on.
    pub timeline: Option<u64>,
    /// The fencing token of the leader lock holding under which the node accepted the
    /// write, when the harness knows it.
    pub token: Option<u64>,
    /// The unique row id the write inserted, for the durability check.
    pub row: Option<u64>,
}

impl Op {
    /// Whether this is an acknowledged write: the only kind of operation the checkers
    /// count as evidence that a node acted as primary.
    #[must_use]
    pub fn is_ok_write(&self) -> bool {
        self.kind == OpKind::Write && self.outcome == Outcome::Ok
    }
}

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Inserted one unique row.
    Write,
    /// Read without writing (e.g. the final read of the rows); the checkers ignore it.
    Read,
}

/// How an operation ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: the write committed.
    Ok,
    /// Refused before it could take effect (read-only server, connection refused): it
    /// did not happen.
    Failed,
    /// Sent, but no answer came (timeout, connection lost): it may or may not have
    /// happened.
    Unknown,
}

/// One injected fault, from its start to its heal (`None`: never healed in the run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// The kind, e.g. `partition`, `pause`, `kill-agent`; availability is summarized
    /// per kind.
    pub kind: String,
    /// What it hit: a node name, or a description such as `pg0|pg1,pg2`.
    pub target: String,
    /// When it started.
    #[serde(rename = "start_ns", with = "nanos")]
    pub start: Duration,
    /// When it was healed.
    #[serde(rename = "end_ns", with = "nanos_option")]
    pub end: Option<Duration>,
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A client operation.
    Op(Op),
    /// A fault.
    Fault(FaultEvent),
}

/// A whole history: operations in the order they were recorded, and faults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The client operations.
    pub ops: Vec<Op>,
    /// The faults injected.
    pub faults: Vec<FaultEvent>,
}

/// Why a history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path when there is one.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A line is not a history record.
    #[error("line {line}: not a history record: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What `serde_json` found.
        source: serde_json::Error,
    },
}

impl History {
    /// Writes the history as JSON lines: faults first, then operations, each in order.
    pub fn write_jsonl(&self, mut out: impl Write) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            context: "cannot write the history".into(),
            source,
        };
        let records = self
            .faults
            .iter()
            .cloned()
            .map(Record::Fault)
            .chain(self.ops.iter().cloned().map(Record::Op));
        for record in records {
            // A `Record` is plain data: serializing it cannot fail.
            let line = serde_json::to_string(&record).expect("a record serializes");
            writeln!(out, "{line}").map_err(io)?;
        }
        out.flush().map_err(io)
    }

    /// Reads JSON lines as [`History::write_jsonl`] writes them; blank lines are skipped.
    pub fn read_jsonl(input: impl BufRead) -> Result<Self, HistoryError> {
        let mut history = Self::default();
        for (index, line) in input.lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                context: "cannot read the history".into(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let record = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: index + 1,
                source,
            })?;
            match record {
                Record::Op(op) => history.ops.push(op),
                Record::Fault(fault) => history.faults.push(fault),
            }
        }
        Ok(history)
    }

    /// Writes `history.jsonl` (or any path).
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let file = std::fs::File::create(path).map_err(|source| HistoryError::Io {
            context: format!("cannot create {}", path.display()),
            source,
        })?;
        self.write_jsonl(std::io::BufWriter::new(file))
    }

    /// Reads a file [`History::save`] wrote.
    pub fn load(path: &Path) -> Result<Self, HistoryError> {
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        Self::read_jsonl(std::io::BufReader::new(file))
    }
}

/// A `Duration` as whole nanoseconds.
mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        // u64 nanoseconds reach 584 years: more than any run.
        s.serialize_u64(d.as_nanos() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_nanos)
    }
}

/// An `Option<Duration>` as whole nanoseconds or `null`.
mod nanos_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option, reason = "serde's `with` passes `&Option<T>`")]
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_nanos() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|n| n.map(Duration::from_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, outcome: Outcome, timeline: Option<u64>) -> Op {
        Op {
            id,
            client: 1,
            node: "pg1".into(),
            kind: OpKind::Write,
            invoke: Duration::from_nanos(1_000_000_001),
            complete: Duration::from_millis(1_010),
            outcome,
            timeline,
            token: Some(41),
            row: Some(id),
        }
    }

    #[test]
    fn a_history_written_as_json_lines_reads_back_the_same() {
        let history = History {
            ops: vec![
                op(1, Outcome::Ok, Some(2)),
                op(2, Outcome::Unknown, None),
                op(3, Outcome::Failed, None),
            ],
            faults: vec![
                FaultEvent {
                    kind: "partition".into(),
                    target: "pg0".into(),
                    start: Duration::from_secs(30),
                    end: Some(Duration::from_secs(45)),
                },
                FaultEvent {
                    kind: "pause".into(),
                    target: "pg2".into(),
                    start: Duration::from_secs(50),
                    end: None,
                },
            ],
        };
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(
            text.contains(r#""type":"op""#) && text.contains(r#""outcome":"unknown""#),
            "{text}"
        );
        assert!(text.contains(r#""invoke_ns":1000000001"#), "{text}");
        assert_eq!(History::read_jsonl(text.as_bytes()).unwrap(), history);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text = "\n{\"type\":\"fault\",\"kind\":\"x\",\"target\":\"pg0\",\"start_ns\":1,\"end_ns\":null}\nnot json\n";
        let error = History::read_jsonl(text.as_bytes()).unwrap_err();
        assert!(
            matches!(error, HistoryError::Parse { line: 3, .. }),
            "{error}"
        );
    }
}
