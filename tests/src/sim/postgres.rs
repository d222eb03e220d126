//! A simulated PostgreSQL server: stopped, starting, replica (maybe promoting) or
//! primary, with a timeline and a WAL of committed rows.

use tokio::time::Instant;

use ha_agent::ha::{DataDir, LocalPostgres, PgState, WalPosition};

/// Bytes of WAL per committed row: 128 rows make `maximum_lag_on_failover`'s default
/// 1 MiB, so a replica cut off from a busy primary for a minute may not race.
pub(super) const ROW_BYTES: u64 = 8192;
/// Where every WAL starts (a fresh `initdb`'s first record is not at 0 either; 0 would
/// read as "unknown").
const WAL_BASE: u64 = 0x0300_0000;

/// One committed row in the WAL: its id and the timeline it committed on. Two WALs
/// agree up to where their entries agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) row: u64,
    pub(super) timeline: u64,
}

/// Whether and how the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Run {
    Stopped,
    /// Started; accepts connections at `ready_at`.
    Starting {
        ready_at: Instant,
        primary: bool,
        upstream: Option<usize>,
    },
    /// In recovery, streaming from `upstream` while that server runs; promoting when
    /// `promote_at` is set (done at that instant).
    Replica {
        upstream: Option<usize>,
        promote_at: Option<Instant>,
    },
    Primary,
}

/// A switch from `timeline` to the next, at `position` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Switch {
    pub(super) timeline: u64,
    pub(super) position: usize,
}

#[derive(Clone, Debug)]
pub(super) struct SimPostgres {
    pub(super) run: Run,
    pub(super) timeline: u64,
    pub(super) wal: Vec<Entry>,
    pub(super) history: Vec<Switch>,
    /// As `pg_control` says after a stop: it last ran as a primary.
    pub(super) was_primary: bool,
    /// Bumped whenever the server stops, so a client can tell that the server it sent a
    /// write to went away before answering.
    pub(super) incarnation: u64,
    /// Whether the last replication step could stream from the upstream.
    pub(super) streaming: bool,
}

/// The system identifier every simulated node shares.
pub(super) const SYSTEM_ID: &str = "7000000000000000001";

pub(super) fn lsn(entries: usize) -> u64 {
    WAL_BASE + entries as u64 * ROW_BYTES
}

impl SimPostgres {
    pub(super) fn new() -> Self {
        Self {
            run: Run::Stopped,
            timeline: 1,
            wal: Vec::new(),
            history: Vec::new(),
            was_primary: false,
            incarnation: 0,
            streaming: false,
        }
    }

    pub(super) fn is_primary(&self) -> bool {
        self.run == Run::Primary
    }

    pub(super) fn is_running(&self) -> bool {
        matches!(self.run, Run::Primary | Run::Replica { .. })
    }

    pub(super) fn is_promoting(&self) -> bool {
        matches!(
            self.run,
            Run::Replica {
                promote_at: Some(_),
                ..
            }
        )
    }

    /// What the agent's observe step reads.
    pub(super) fn observe(&self) -> LocalPostgres {
        let position = lsn(self.wal.len());
        let (state, wal, timeline) = match self.run {
            Run::Stopped => (
                PgState::Stopped {
                    was_primary: self.was_primary,
                },
                WalPosition::default(),
                Some(self.timeline),
            ),
            Run::Starting { .. } => (PgState::Starting, WalPosition::default(), None),
            Run::Replica { .. } => (
                PgState::Replica,
                WalPosition {
                    receive: Some(position),
                    replay: Some(position),
                    flush: None,
                },
                Some(self.timeline),
            ),
            Run::Primary => (
                PgState::Primary,
                WalPosition {
                    receive: None,
                    replay: None,
                    flush: Some(position),
                },
                Some(self.timeline),
            ),
        };
        LocalPostgres {
            data_dir: DataDir::Initialized {
                system_id: SYSTEM_ID.to_owned(),
            },
            state,
            timeline,
            wal,
        }
    }

    /// Stops at once (`-m immediate`, a crash, the dead-man's `SIGQUIT`). Returns whether
    /// it ran.
    pub(super) fn stop(&mut self) -> bool {
        if self.run == Run::Stopped {
            return false;
        }
        match self.run {
            Run::Primary => self.was_primary = true,
            Run::Replica { .. } => self.was_primary = false,
            Run::Starting { primary, .. } => self.was_primary = primary,
            Run::Stopped => {}
        }
        self.run = Run::Stopped;
        self.incarnation += 1;
        self.streaming = false;
        true
    }

    pub(super) fn start(
        &mut self,
        now: Instant,
        delay: std::time::Duration,
        primary: bool,
        upstream: Option<usize>,
    ) {
        if self.run == Run::Stopped {
            self.run = Run::Starting {
                ready_at: now + delay,
                primary,
                upstream,
            };
        }
    }

    /// `pg_ctl promote`: a running replica finishes recovery at `at`.
    pub(super) fn promote(&mut self, at: Instant) -> bool {
        if let Run::Replica {
            upstream,
            promote_at: None,
        } = self.run
        {
            self.run = Run::Replica {
                upstream,
                promote_at: Some(at),
            };
            true
        } else {
            false
        }
    }

    /// Streams from another node (reconfigures a running replica).
    pub(super) fn follow(&mut self, upstream: Option<usize>) {
        if let Run::Replica { promote_at, .. } = self.run {
            self.run = Run::Replica {
                upstream,
                promote_at,
            };
        }
    }

    /// Finishes what is due at `now`: a start, a promotion. Returns whether a promotion
    /// finished.
    pub(super) fn advance(&mut self, now: Instant) -> bool {
        match self.run {
            Run::Starting {
                ready_at,
                primary,
                upstream,
            } if ready_at <= now => {
                self.run = if primary {
                    Run::Primary
                } else {
                    Run::Replica {
                        upstream,
                        promote_at: None,
                    }
                };
                false
            }
            Run::Replica {
                promote_at: Some(at),
                ..
            } if at <= now => {
                // A promotion picks the next timeline after the highest it knows of.
                self.history.push(Switch {
                    timeline: self.timeline,
                    position: self.wal.len(),
                });
                self.timeline += 1;
                self.run = Run::Primary;
                self.was_primary = true;
                self.streaming = false;
                true
            }
            _ => false,
        }
    }

    /// Commits one row, if this server accepts writes: the timeline it committed on.
    pub(super) fn commit(&mut self, row: u64) -> Option<u64> {
        self.is_primary().then(|| {
            self.wal.push(Entry {
                row,
                timeline: self.timeline,
            });
            self.timeline
        })
    }

    /// Whether our WAL is a prefix of `source`'s, so streaming (or a no-op rewind) works.
    ///
    /// Comparing the last entry is enough: row ids are unique, each entry is created by
    /// one commit on one server, and it reaches another server only with everything
    /// before it (streaming and rewinding copy whole prefixes).
    pub(super) fn can_stream_from(&self, source: &Self) -> bool {
        match self.wal.len() {
            0 => true,
            n => source.wal.get(n - 1) == self.wal.last(),
        }
    }

    /// Copies what `source` has beyond our position, and its timeline when we reach it.
    pub(super) fn replicate_from(&mut self, source: &Self) {
        if !self.can_stream_from(source) {
            self.streaming = false;
            return;
        }
        self.streaming = true;
        self.wal.extend_from_slice(&source.wal[self.wal.len()..]);
        if source.timeline > self.timeline {
            self.timeline = source.timeline;
            self.history.clone_from(&source.history);
        }
    }

    /// `pg_rewind` onto `source`: our WAL becomes the common prefix, then as if streamed.
    pub(super) fn rewind_onto(&mut self, source: &Self) {
        let common = self
            .wal
            .iter()
            .zip(&source.wal)
            .take_while(|(a, b)| a == b)
            .count();
        self.wal.truncate(common);
        self.timeline = source.timeline;
        self.history.clone_from(&source.history);
        self.wal.extend_from_slice(&source.wal[common..]);
    }

    /// The row ids this server has, for the durability check.
    pub(super) fn rows(&self) -> std::collections::BTreeSet<u64> {
        self.wal.iter().map(|e| e.row).collect()
    }
}
