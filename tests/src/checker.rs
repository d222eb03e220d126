//! Checkers: pure functions over a [`History`](crate::history::History).
//!
//! - [`single_writer`]: no two nodes acted as writable primaries at once.
//! - [`durability`]: acknowledged writes missing from the final primary.
//! - [`availability`]: how long each fault kept the cluster from acknowledging writes.
//!
//! Only acknowledged writes ([`Outcome::Ok`](crate::history::Outcome::Ok)) are evidence:
//! a failed write did not happen, and an unknown one may or may not have, so neither can
//! show that a node acted as primary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::history::{FaultEvent, Op};

/// The epoch a write was acknowledged in: the PostgreSQL timeline when the answer told
/// it, else the writer's fencing token when known.
///
/// Two epochs are *comparable* when they are of the same kind. In a correct cluster each
/// epoch has one writer, and epochs only grow: a promotion starts a new timeline (one
/// more than any its node had), and each holding of the lock a greater token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Epoch {
    /// A PostgreSQL timeline.
    Timeline(u64),
    /// A fencing token of the leader lock.
    Token(u64),
}

impl Epoch {
    /// The op's epoch: its timeline, else its token, else none.
    #[must_use]
    pub fn of(op: &Op) -> Option<Self> {
        op.timeline
            .map(Self::Timeline)
            .or(op.token.map(Self::Token))
    }

    /// `Some(ordering)` when both are of the same kind.
    fn compare(self, other: Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Self::Timeline(a), Self::Timeline(b)) | (Self::Token(a), Self::Token(b)) => {
                Some(a.cmp(&b))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeline(t) => write!(f, "timeline {t}"),
            Self::Token(t) => write!(f, "token {t}"),
        }
    }
}

/// An acknowledged write, as a violation names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRef {
    /// [`Op::id`].
    pub id: u64,
    /// The node that acknowledged it.
    pub node: String,
    /// Its epoch, when known.
    pub epoch: Option<Epoch>,
    /// [`Op::invoke`].
    pub invoke: Duration,
    /// [`Op::complete`].
    pub complete: Duration,
}

impl OpRef {
    fn new(op: &Op) -> Self {
        Self {
            id: op.id,
            node: op.node.clone(),
            epoch: Epoch::of(op),
            invoke: op.invoke,
            complete: op.complete,
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} on {} ({}, {:.3}s..{:.3}s)",
            self.id,
            self.node,
            self.epoch
                .map_or_else(|| "epoch unknown".to_owned(), |e| e.to_string()),
            self.invoke.as_secs_f64(),
            self.complete.as_secs_f64()
        )
    }
}

/// Evidence that two nodes acted as writable primaries at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Violation {
    /// Two nodes acknowledged writes in the same epoch, which has one primary.
    SharedEpoch {
        /// The first acknowledged write of one node in the epoch.
        first: OpRef,
        /// The first acknowledged write of another node in the same epoch.
        second: OpRef,
    },
    /// A node acknowledged a write of an older epoch that was sent after another node's
    /// write of a newer epoch had been acknowledged.
    StaleWrite {
        /// The earliest such write of the older epoch.
        stale: OpRef,
        /// The earliest acknowledged write of the newer epoch.
        newer: OpRef,
    },
    /// Another node's write was acknowledged strictly between two acknowledged writes of
    /// one node in one epoch (used when the epochs cannot be compared).
    Interleaved {
        /// The earliest-completed write of the surrounding epoch.
        before: OpRef,
        /// The other node's write.
        between: OpRef,
        /// The latest-sent write of the surrounding epoch.
        after: OpRef,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedEpoch { first, second } => write!(
                f,
                "two primaries in one epoch: {first} and {second} were both acknowledged"
            ),
            Self::StaleWrite { stale, newer } => write!(
                f,
                "stale primary: {stale} was sent after {newer} had been acknowledged"
            ),
            Self::Interleaved {
                before,
                between,
                after,
            } => write!(
                f,
                "interleaved primaries: {between} was acknowledged between {before} and {after}"
            ),
        }
    }
}

/// The acknowledged writes of one node in one epoch: enough to decide every rule without
/// comparing all pairs of writes.
struct Group<'h> {
    node: &'h str,
    epoch: Epoch,
    /// Sorted by `(invoke, id)`.
    sent: Vec<&'h Op>,
    /// The write that completed first (earliest `complete`).
    first_done: &'h Op,
}

impl Group<'_> {
    fn first_sent(&self) -> &Op {
        self.sent[0]
    }

    fn last_sent(&self) -> &Op {
        self.sent[self.sent.len() - 1]
    }
}

/// The single-writer check: no two nodes acknowledged writes as primaries at once.
///
/// Only acknowledged writes count; each has an [`Epoch`] (timeline, else token) or none.
/// Three rules, each sound for a correct cluster, where one node is primary per epoch,
/// epochs only grow, and a new primary is promoted only after the old one stopped
/// accepting writes (the lease expired):
///
/// 1. **Shared epoch**: two different nodes acknowledged writes in the same epoch. A
///    timeline is created by one promotion of one node, and a token by one acquisition
///    of one node, so a correct cluster never does this.
/// 2. **Stale write**: a write `a` on node A in epoch `ea` was *sent* after a write `b`
///    on node B ≠ A in a comparable, greater epoch `eb > ea` had *completed*
///    (`b.complete < a.invoke`). Then `a` committed after `b` did, so A was still
///    accepting writes in the old epoch after B had acknowledged one in the new: two
///    writable primaries. A legitimate failover never does this: A stops accepting
///    before B is promoted, so every write A commits in `ea` was sent before B's first
///    write in `eb` could complete. A failback (A on timeline 1, B on 2, A on 3) does not
///    either: A's later writes are in epoch 3 > 2. Writes whose windows merely overlap
///    (A's last write still unanswered while B's first completes) are not flagged, since
///    A's may have committed first.
/// 3. **Interleaved** (for epochs that cannot be compared: one has a timeline and the
///    other only a token, or one has neither): a write `b` on node B was acknowledged
///    strictly between two acknowledged writes `a1`, `a2` of node A *in one epoch*
///    (`a1.complete < b.invoke` and `b.complete < a2.invoke`). A was primary in that one
///    epoch both before and after `b` committed, with no promotion of its own between
///    (that would have changed its epoch), so B accepted a write while A was primary.
///    A failback cannot match: A's writes after it are in a new epoch. When neither
///    writes' epoch is known at all, nothing is flagged: a failback and a split brain
///    look the same without epochs.
///
/// Each violation is reported once per pair of (node, epoch) groups, naming the earliest
/// offending writes; the result is sorted by the offending writes' times.
#[must_use]
pub fn single_writer(ops: &[Op]) -> Vec<Violation> {
    let mut sent: BTreeMap<(&str, Epoch), Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.is_ok_write()) {
        if let Some(epoch) = Epoch::of(op) {
            sent.entry((op.node.as_str(), epoch)).or_default().push(op);
        }
    }
    let groups: Vec<Group<'_>> = sent
        .into_iter()
        .map(|((node, epoch), mut sent)| {
            sent.sort_by_key(|op| (op.invoke, op.id));
            let first_done = sent
                .iter()
                .copied()
                .min_by_key(|op| (op.complete, op.id))
                .expect("a group has a write");
            Group {
                node,
                epoch,
                sent,
                first_done,
            }
        })
        .collect();
    let mut violations = Vec::new();

    // Rule 1: per epoch, the nodes that wrote in it.
    let mut by_epoch: BTreeMap<Epoch, Vec<&Group<'_>>> = BTreeMap::new();
    for group in &groups {
        by_epoch.entry(group.epoch).or_default().push(group);
    }
    for shared in by_epoch.values().filter(|g| g.len() > 1) {
        let first = shared[0];
        for other in &shared[1..] {
            violations.push(Violation::SharedEpoch {
                first: OpRef::new(first.first_sent()),
                second: OpRef::new(other.first_sent()),
            });
        }
    }

    // Rule 2: for each (stale group, newer group), the earliest stale write sent after
    // the newer group's first acknowledgement.
    for newer in &groups {
        for stale in &groups {
            if stale.node == newer.node
                || stale.epoch.compare(newer.epoch) != Some(std::cmp::Ordering::Less)
            {
                continue;
            }
            let acknowledged = newer.first_done.complete;
            let after = stale.sent.partition_point(|op| op.invoke <= acknowledged);
            if let Some(op) = stale.sent.get(after) {
                violations.push(Violation::StaleWrite {
                    stale: OpRef::new(op),
                    newer: OpRef::new(newer.first_done),
                });
            }
        }
    }

    // Rule 3: writes whose epoch cannot be compared with a surrounding group's.
    let candidates = ops.iter().filter(|op| op.is_ok_write());
    let mut reported: BTreeSet<(usize, &str, Option<Epoch>)> = BTreeSet::new();
    for between in candidates {
        let epoch = Epoch::of(between);
        for (index, group) in groups.iter().enumerate() {
            if group.node == between.node || epoch.is_some_and(|e| e.compare(group.epoch).is_some())
            {
                continue;
            }
            if group.first_done.complete < between.invoke
                && between.complete < group.last_sent().invoke
                && reported.insert((index, between.node.as_str(), epoch))
            {
                violations.push(Violation::Interleaved {
                    before: OpRef::new(group.first_done),
                    between: OpRef::new(between),
                    after: OpRef::new(group.last_sent()),
                });
            }
        }
    }
    violations.sort_by_key(|v| match v {
        Violation::SharedEpoch { second, .. } => (second.invoke, second.id),
        Violation::StaleWrite { stale, .. } => (stale.invoke, stale.id),
        Violation::Interleaved { between, .. } => (between.invoke, between.id),
    });
    violations
}

/// Acknowledged writes missing from the final primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durability {
    /// How many writes were acknowledged (with a row id).
    pub acknowledged: usize,
    /// The acknowledged writes whose row is not on the final primary, by op id.
    pub lost: Vec<u64>,
}

impl Durability {
    /// How many acknowledged writes were lost.
    #[must_use]
    pub fn lost_count(&self) -> usize {
        self.lost.len()
    }
}

/// The durability check: every acknowledged write whose row is not among `present`, the
/// row ids read from the final primary. Zero is required in synchronous mode; in
/// asynchronous mode a failover may lose what the new primary had not received yet.
#[must_use]
pub fn durability(ops: &[Op], present: &BTreeSet<u64>) -> Durability {
    let mut result = Durability::default();
    for op in ops.iter().filter(|op| op.is_ok_write()) {
        let Some(row) = op.row else { continue };
        result.acknowledged += 1;
        if !present.contains(&row) {
            result.lost.push(op.id);
        }
    }
    result
}

/// How long one fault kept writes from being acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecovery {
    /// [`FaultEvent::kind`].
    pub kind: String,
    /// [`FaultEvent::target`].
    pub target: String,
    /// [`FaultEvent::start`].
    pub start: Duration,
    /// From the fault's start to the completion of the first acknowledged write on the
    /// next primary: the node and epoch that acknowledged the last write before the next
    /// fault (or the end), i.e. the primary the cluster settled on. An isolated primary
    /// that keeps acknowledging until its lease runs out does not end the outage.
    /// `None` when no write was acknowledged after the start.
    pub unavailable: Option<Duration>,
}

/// Median and maximum unavailability of one fault kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    /// How many faults of this kind.
    pub count: usize,
    /// How many never saw an acknowledged write after them.
    pub unrecovered: usize,
    /// Median unavailability of the recovered ones (the lower middle one of an even
    /// count); zero when none recovered.
    pub median: Duration,
    /// Maximum unavailability of the recovered ones.
    pub max: Duration,
}

/// The availability report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// Per fault, in the order of the history.
    pub faults: Vec<FaultRecovery>,
    /// Per fault kind.
    pub by_kind: BTreeMap<String, KindSummary>,
    /// The longest time between the completions of two consecutive acknowledged writes
    /// (from the first acknowledged write on; zero with fewer than two).
    pub longest_gap: Duration,
}

/// The availability check: for each fault, the time from its start to the first
/// acknowledged write on the next primary (see [`FaultRecovery::unavailable`]), and the
/// longest gap between acknowledged writes.
#[must_use]
pub fn availability(ops: &[Op], faults: &[FaultEvent]) -> Availability {
    let mut ok: Vec<&Op> = ops.iter().filter(|op| op.is_ok_write()).collect();
    ok.sort_by_key(|op| (op.invoke, op.id));
    let recoveries: Vec<FaultRecovery> = faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            // The writes sent from this fault's start until the next fault's.
            let next = faults.get(i + 1).map_or(Duration::MAX, |f| f.start);
            let from = ok.partition_point(|op| op.invoke < fault.start);
            let to = ok.partition_point(|op| op.invoke < next);
            let window = &ok[from..to.max(from)];
            let settled = window
                .iter()
                .max_by_key(|op| op.complete)
                .map(|op| (&op.node, Epoch::of(op)));
            // The earliest *completion* on that primary is what a user waits for.
            let done = window
                .iter()
                .filter(|op| Some((&op.node, Epoch::of(op))) == settled)
                .map(|op| op.complete)
                .min();
            FaultRecovery {
                kind: fault.kind.clone(),
                target: fault.target.clone(),
                start: fault.start,
                unavailable: done.map(|d| d.saturating_sub(fault.start)),
            }
        })
        .collect();

    let mut by_kind: BTreeMap<String, Vec<Option<Duration>>> = BTreeMap::new();
    for recovery in &recoveries {
        by_kind
            .entry(recovery.kind.clone())
            .or_default()
            .push(recovery.unavailable);
    }
    let by_kind = by_kind
        .into_iter()
        .map(|(kind, times)| {
            let mut recovered: Vec<Duration> = times.iter().flatten().copied().collect();
            recovered.sort();
            let summary = KindSummary {
                count: times.len(),
                unrecovered: times.len() - recovered.len(),
                median: recovered
                    .get(recovered.len().saturating_sub(1) / 2)
                    .copied()
                    .unwrap_or_default(),
                max: recovered.last().copied().unwrap_or_default(),
            };
            (kind, summary)
        })
        .collect();

    let mut completions: Vec<Duration> = ok.iter().map(|op| op.complete).collect();
    completions.sort();
    let longest_gap = completions
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default();
    Availability {
        faults: recoveries,
        by_kind,
        longest_gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Outcome};

    /// An acknowledged write on `node`, sent at `invoke` ms, answered at `complete` ms.
    fn write(id: u64, node: &str, invoke: u64, complete: u64, timeline: Option<u64>) -> Op {
        Op {
            id,
            client: id,
            node: node.into(),
            kind: OpKind::Write,
            invoke: Duration::from_millis(invoke),
            complete: Duration::from_millis(complete),
            outcome: Outcome::Ok,
            timeline,
            token: None,
            row: Some(id),
        }
    }

    fn with(mut op: Op, outcome: Outcome) -> Op {
        op.outcome = outcome;
        op
    }

    fn tokened(mut op: Op, token: u64) -> Op {
        op.token = Some(token);
        op
    }

    fn rules(violations: &[Violation]) -> Vec<&'static str> {
        violations
            .iter()
            .map(|v| match v {
                Violation::SharedEpoch { .. } => "shared",
                Violation::StaleWrite { .. } => "stale",
                Violation::Interleaved { .. } => "interleaved",
            })
            .collect()
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn single_writer_table() {
        let cases: Vec<(&str, Vec<Op>, Vec<&str>)> = vec![
            (
                "clean failover: A on 1, a gap, B on 2",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "A", 100, 110, Some(1)),
                    write(3, "B", 5_000, 5_010, Some(2)),
                    write(4, "B", 5_100, 5_110, Some(2)),
                ],
                vec![],
            ),
            (
                "failback: A on 1, B on 2, A on 3",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "B", 1_000, 1_010, Some(2)),
                    write(3, "B", 1_100, 1_110, Some(2)),
                    write(4, "A", 2_000, 2_010, Some(3)),
                    write(5, "A", 2_100, 2_110, Some(3)),
                ],
                vec![],
            ),
            (
                "split brain: both promoted to timeline 2",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "A", 1_000, 1_010, Some(2)),
                    write(3, "B", 1_005, 1_015, Some(2)),
                ],
                vec!["shared"],
            ),
            (
                "split brain: the old primary keeps accepting after the new one did",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "B", 1_000, 1_010, Some(2)),
                    write(3, "A", 1_500, 1_510, Some(1)),
                    write(4, "A", 1_600, 1_610, Some(1)),
                ],
                vec!["stale"],
            ),
            (
                "overlapping but legal: A's last write unanswered while B's first completes",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "A", 900, 1_200, Some(1)),
                    write(3, "B", 1_000, 1_010, Some(2)),
                ],
                vec![],
            ),
            (
                "unknown and failed writes of the old primary are ignored",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "B", 1_000, 1_010, Some(2)),
                    with(write(3, "A", 1_500, 1_510, Some(1)), Outcome::Unknown),
                    with(write(4, "A", 1_600, 1_610, Some(1)), Outcome::Failed),
                    with(write(5, "B", 1_600, 1_610, Some(1)), Outcome::Failed),
                ],
                vec![],
            ),
            (
                "tokens instead of timelines: a stale token after a newer one",
                vec![
                    tokened(write(1, "A", 0, 10, None), 7),
                    tokened(write(2, "B", 1_000, 1_010, None), 9),
                    tokened(write(3, "A", 1_500, 1_510, None), 7),
                ],
                vec!["stale"],
            ),
            (
                "no epoch on B's write: interleaved between two of A's timeline-1 writes",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "B", 500, 510, None),
                    write(3, "A", 1_000, 1_010, Some(1)),
                ],
                vec!["interleaved"],
            ),
            (
                "no epoch on B's write, A failed back in a new epoch: not flagged",
                vec![
                    write(1, "A", 0, 10, Some(1)),
                    write(2, "B", 500, 510, None),
                    write(3, "A", 1_000, 1_010, Some(3)),
                ],
                vec![],
            ),
            (
                "no epochs at all: a failback and a split brain look alike, not flagged",
                vec![
                    write(1, "A", 0, 10, None),
                    write(2, "B", 500, 510, None),
                    write(3, "A", 1_000, 1_010, None),
                ],
                vec![],
            ),
        ];
        for (name, ops, expected) in cases {
            let violations = single_writer(&ops);
            assert_eq!(rules(&violations), expected, "{name}: {violations:#?}");
        }
    }

    #[test]
    fn a_violation_names_the_operations_and_epochs() {
        let ops = vec![
            write(1, "A", 0, 10, Some(1)),
            write(2, "B", 1_000, 1_010, Some(2)),
            write(3, "A", 1_500, 1_510, Some(1)),
        ];
        let violations = single_writer(&ops);
        let text = violations[0].to_string();
        assert!(text.contains("op 3 on A (timeline 1"), "{text}");
        assert!(text.contains("op 2 on B (timeline 2"), "{text}");
        let Violation::StaleWrite { stale, newer } = &violations[0] else {
            panic!("{violations:?}")
        };
        assert_eq!((stale.id, newer.id), (3, 2));
    }

    #[test]
    fn durability_counts_acknowledged_writes_missing_from_the_final_primary() {
        let ops = vec![
            write(1, "A", 0, 10, Some(1)),
            write(2, "A", 20, 30, Some(1)),
            with(write(3, "A", 40, 50, Some(1)), Outcome::Unknown),
            write(4, "B", 60, 70, Some(2)),
        ];
        let present = BTreeSet::from([1, 4]);
        let result = durability(&ops, &present);
        assert_eq!(result.acknowledged, 3);
        assert_eq!(result.lost, vec![2]);
        assert_eq!(result.lost_count(), 1);
    }

    #[test]
    fn availability_measures_each_fault_until_the_next_primary_acknowledges() {
        let ops = vec![
            write(1, "A", 0, 10, Some(1)),
            // The isolated primary still acknowledges for a while: not the recovery.
            write(6, "A", 600, 610, Some(1)),
            with(write(2, "A", 1_000, 1_010, Some(1)), Outcome::Failed),
            write(3, "B", 4_000, 4_050, Some(2)),
            write(4, "B", 4_010, 4_020, Some(2)),
            write(5, "B", 9_000, 9_010, Some(2)),
        ];
        let fault = |kind: &str, start: u64| FaultEvent {
            kind: kind.into(),
            target: "A".into(),
            start: Duration::from_millis(start),
            end: None,
        };
        let faults = vec![
            fault("partition", 500),
            fault("partition", 8_000),
            fault("pause", 9_500),
        ];
        let report = availability(&ops, &faults);
        let times: Vec<Option<Duration>> = report.faults.iter().map(|f| f.unavailable).collect();
        assert_eq!(
            times,
            vec![
                Some(Duration::from_millis(3_520)),
                Some(Duration::from_millis(1_010)),
                None
            ]
        );
        let partition = &report.by_kind["partition"];
        assert_eq!(partition.count, 2);
        assert_eq!(partition.median, Duration::from_millis(1_010));
        assert_eq!(partition.max, Duration::from_millis(3_520));
        assert_eq!(report.by_kind["pause"].unrecovered, 1);
        assert_eq!(report.longest_gap, Duration::from_millis(4_960));
    }
}
