//! The nemesis: a seeded schedule of faults ([`schedule`], pure and deterministic given the
//! seed) and the task that injects and heals them on a live run ([`run`]).
//!
//! Faults do not overlap: each is held, healed, and followed by a quiet gap in which the
//! cluster may recover, so the availability checker can tie each outage to one fault.
//! Targets that depend on the live cluster ("the primary") are resolved when the fault
//! starts, from the node that acknowledged the latest write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ChaosError;
use super::cluster::Cluster;
use super::net::Network;
use super::workload::Recorder;
use crate::history::FaultEvent;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Cut one random node off from the other nodes (a minority/majority split).
    IsolateNode,
    /// Cut the current primary off from the other nodes.
    IsolatePrimary,
    /// A non-transitive split: two nodes cannot talk, the third talks to both.
    Bridge,
    /// `kill -9` an agent, restart it after the hold.
    KillAgent,
    /// `kill -9` a postmaster (its agent restarts it).
    KillPostgres,
    /// `kill -9` a DCS member, restart it after the hold.
    KillDcs,
    /// `SIGSTOP` an agent, `SIGCONT` after the hold.
    PauseAgent,
    /// `SIGSTOP` a postmaster and its backends.
    PausePostgres,
    /// `SIGSTOP` a DCS member.
    PauseDcs,
    /// `tc netem` delay and loss on one node's link.
    Netem,
    /// Jump one agent's wall clock by minutes to an hour, either way.
    Clock,
}

impl FaultKind {
    /// Every kind, in `--faults` order.
    pub const ALL: [Self; 11] = [
        Self::IsolateNode,
        Self::IsolatePrimary,
        Self::Bridge,
        Self::KillAgent,
        Self::KillPostgres,
        Self::KillDcs,
        Self::PauseAgent,
        Self::PausePostgres,
        Self::PauseDcs,
        Self::Netem,
        Self::Clock,
    ];

    /// The name in `--faults`, the history and the summary.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::IsolateNode => "isolate-node",
            Self::IsolatePrimary => "isolate-primary",
            Self::Bridge => "bridge",
            Self::KillAgent => "kill-agent",
            Self::KillPostgres => "kill-postgres",
            Self::KillDcs => "kill-dcs",
            Self::PauseAgent => "pause-agent",
            Self::PausePostgres => "pause-postgres",
            Self::PauseDcs => "pause-dcs",
            Self::Netem => "netem",
            Self::Clock => "clock",
        }
    }

    /// Parses a comma-separated list of names, or `all`.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        if list.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                Self::ALL
                    .into_iter()
                    .find(|kind| kind.name() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                        format!("unknown fault {name:?}; known: all, {}", known.join(", "))
                    })
            })
            .collect()
    }

    /// Whether the fault cuts the network (held past the ttl, so a failover can happen).
    fn is_partition(self) -> bool {
        matches!(
            self,
            Self::IsolateNode | Self::IsolatePrimary | Self::Bridge
        )
    }
}

/// `SplitMix64`: tiny, seedable and good enough to draw a schedule.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What.
    pub kind: FaultKind,
    /// When it starts, from the start of the workload.
    pub start: Duration,
    /// How long it is held before it is healed.
    pub hold: Duration,
    /// Random bits that pick the target and the magnitude when the fault starts.
    pub pick: u64,
}

/// The timing the schedule adapts to (the cluster's `ttl` and `loop_wait`, in seconds).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The leader lease.
    pub ttl: u64,
    /// The agents' loop period.
    pub loop_wait: u64,
}

/// The faults for a run of `duration`, drawn from `seed` among `kinds`: deterministic.
///
/// Partitions are held ttl + 2..8 s (long enough for a failover), other faults 3..ttl s;
/// after each heal, a quiet gap of 2 `loop_wait`s to `ttl` seconds. The last fault is healed
/// before `duration` ends.
#[must_use]
pub fn schedule(seed: u64, duration: Duration, kinds: &[FaultKind], timing: Timing) -> Vec<Step> {
    let mut rng = SplitMix64::new(seed);
    let mut steps = Vec::new();
    if kinds.is_empty() {
        return steps;
    }
    // Let the workload settle before the first fault.
    let mut at = Duration::from_secs(5);
    loop {
        let kind = kinds[usize::try_from(rng.next_u64() % kinds.len() as u64).expect("small")];
        let hold = if kind.is_partition() {
            rng.between(timing.ttl + 2, timing.ttl + 8)
        } else {
            rng.between(3, timing.ttl.max(4))
        };
        let hold = Duration::from_secs(hold);
        if at + hold > duration {
            break;
        }
        steps.push(Step {
            kind,
            start: at,
            hold,
            pick: rng.next_u64(),
        });
        let gap = rng.between(2 * timing.loop_wait, timing.ttl.max(2 * timing.loop_wait));
        at += hold + Duration::from_secs(gap);
    }
    steps
}

/// What the nemesis needs of the live run.
pub struct Target<'a> {
    /// The hosts' network.
    pub network: &'a Network,
    /// The servers.
    pub cluster: &'a Cluster,
    /// The history so far (for "the primary").
    pub recorder: &'a Arc<Recorder>,
    /// When the workload started: the history's zero.
    pub origin: Instant,
}

/// Injects and heals `steps` in order, recording each as a [`FaultEvent`]. Stops early when
/// `stop` fires (healing the fault in progress).
pub async fn run(
    target: &Target<'_>,
    steps: &[Step],
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ChaosError> {
    let nodes = target.network.nodes();
    for step in steps {
        let wait = (target.origin + step.start).saturating_duration_since(Instant::now());
        if stopped(&mut stop, wait).await {
            return Ok(());
        }
        let random = usize::try_from(step.pick % nodes as u64).expect("few nodes");
        // Half of the process faults hit the primary, where they matter most.
        let node = if step.kind == FaultKind::IsolatePrimary || (step.pick >> 32) & 1 == 1 {
            target.recorder.last_writer().unwrap_or(random)
        } else {
            random
        };
        let start = target.origin.elapsed();
        let description = inject(target, step, node)?;
        let index = target.recorder.fault(FaultEvent {
            kind: step.kind.name().to_owned(),
            target: description,
            start,
            end: None,
        });
        let interrupted = stopped(&mut stop, step.hold).await;
        heal(target, step.kind, node)?;
        target.recorder.fault_ended(index, target.origin.elapsed());
        if interrupted {
            return Ok(());
        }
    }
    Ok(())
}

/// Sleeps `wait`; `true` when `stop` fired first.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = stop.changed() => true,
    }
}

fn name(i: usize) -> String {
    format!("node{i}")
}

/// Starts the fault; returns its target as the history names it.
fn inject(target: &Target<'_>, step: &Step, node: usize) -> Result<String, ChaosError> {
    let nodes = target.network.nodes();
    let cluster = target.cluster;
    let others = |i: usize| (0..nodes).filter(move |&k| k != i);
    let description = match step.kind {
        FaultKind::IsolateNode | FaultKind::IsolatePrimary => {
            let cut: Vec<(usize, usize)> = others(node).map(|k| (node, k)).collect();
            target.network.partition(&cut)?;
            let rest: Vec<String> = others(node).map(name).collect();
            format!("{}|{}", name(node), rest.join(","))
        }
        FaultKind::Bridge => {
            // `node` is the bridge; its two neighbours cannot talk to each other.
            let ends: Vec<usize> = others(node).take(2).collect();
            target.network.partition(&[(ends[0], ends[1])])?;
            format!("{}<-{}->{}", name(ends[0]), name(node), name(ends[1]))
        }
        FaultKind::KillAgent => {
            cluster.kill_agent(node)?;
            name(node)
        }
        FaultKind::KillPostgres => {
            cluster.kill_postgres(node);
            name(node)
        }
        FaultKind::KillDcs => {
            cluster.kill_dcs(node)?;
            name(node)
        }
        FaultKind::PauseAgent => {
            cluster.pause_agent(node)?;
            name(node)
        }
        FaultKind::PausePostgres => {
            cluster.pause_postgres(node);
            name(node)
        }
        FaultKind::PauseDcs => {
            cluster.pause_dcs(node)?;
            name(node)
        }
        FaultKind::Netem => {
            let delay = 50 + (step.pick >> 8) % 250;
            let loss = 5 + (step.pick >> 20) % 20;
            target.network.slow(node, delay, loss)?;
            format!("{} delay {delay}ms loss {loss}%", name(node))
        }
        FaultKind::Clock => {
            let minutes = i64::try_from(1 + (step.pick >> 8) % 60).expect("small");
            let offset = if (step.pick >> 16) & 1 == 1 {
                minutes * 60
            } else {
                -minutes * 60
            };
            cluster.set_clock(node, offset)?;
            format!("{} {offset:+}s", name(node))
        }
    };
    Ok(description)
}

fn heal(target: &Target<'_>, kind: FaultKind, node: usize) -> Result<(), ChaosError> {
    let cluster = target.cluster;
    match kind {
        FaultKind::IsolateNode | FaultKind::IsolatePrimary | FaultKind::Bridge => {
            target.network.partition(&[])
        }
        FaultKind::KillAgent => cluster.start_agent(node),
        // The agent brings its PostgreSQL back by itself.
        FaultKind::KillPostgres => Ok(()),
        FaultKind::KillDcs => cluster.start_dcs(node),
        FaultKind::PauseAgent => cluster.resume_agent(node),
        FaultKind::PausePostgres => {
            cluster.resume_postgres(node);
            Ok(())
        }
        FaultKind::PauseDcs => cluster.resume_dcs(node),
        FaultKind::Netem => {
            target.network.unslow(node);
            Ok(())
        }
        FaultKind::Clock => cluster.set_clock(node, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        ttl: 10,
        loop_wait: 2,
    };

    #[test]
    fn a_seed_gives_the_same_schedule_every_time() {
        let a = schedule(42, Duration::from_secs(300), &FaultKind::ALL, TIMING);
        let b = schedule(42, Duration::from_secs(300), &FaultKind::ALL, TIMING);
        let c = schedule(43, Duration::from_secs(300), &FaultKind::ALL, TIMING);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 10, "{a:?}");
    }

    #[test]
    fn faults_do_not_overlap_and_end_within_the_duration() {
        let duration = Duration::from_secs(200);
        let steps = schedule(7, duration, &FaultKind::ALL, TIMING);
        for pair in steps.windows(2) {
            assert!(pair[0].start + pair[0].hold < pair[1].start, "{pair:?}");
        }
        let last = steps.last().unwrap();
        assert!(last.start + last.hold <= duration);
        for step in steps.iter().filter(|s| s.kind.is_partition()) {
            assert!(step.hold > Duration::from_secs(TIMING.ttl), "{step:?}");
        }
    }

    #[test]
    fn the_fault_list_parses_names_and_rejects_unknown_ones() {
        assert_eq!(
            FaultKind::parse_list("kill-agent, bridge").unwrap(),
            vec![FaultKind::KillAgent, FaultKind::Bridge]
        );
        assert_eq!(FaultKind::parse_list("all").unwrap().len(), 11);
        let error = FaultKind::parse_list("kill-agent,flood").unwrap_err();
        assert!(error.contains("\"flood\""), "{error}");
    }
}
