//! Prometheus metrics of the store, rendered as text on the admin port.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the proposal latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Counters updated by the store.
#[derive(Default)]
pub struct Metrics {
    /// Times a (new) leader was observed.
    pub leader_changes: AtomicU64,
    /// Proposals that succeeded.
    pub proposals_ok: AtomicU64,
    /// Proposals that failed.
    pub proposals_failed: AtomicU64,
    /// On the leader: followers' forwarded batches folded into its own batches.
    pub forwarded_folded: AtomicU64,
    /// Read-index rounds run for linearizable reads ([`crate::read`]).
    pub read_rounds: AtomicU64,
    /// Linearizable read barriers those rounds answered.
    pub read_barriers: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
}

impl Metrics {
    /// Records one proposal's latency and outcome.
    pub fn observe_proposal(&self, d: Duration, ok: bool) {
        if ok {
            self.proposals_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records one read-index round that answered `barriers` read barriers.
    pub fn observe_read_round(&self, barriers: usize) {
        self.read_rounds.fetch_add(1, Ordering::Relaxed);
        self.read_barriers
            .fetch_add(barriers as u64, Ordering::Relaxed);
    }

    /// Renders the counters plus the given Raft gauges.
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::new();
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut o,
            "bosun_raft_term",
            "Current Raft term.",
            g.term as f64,
        );
        gauge(
            &mut o,
            "bosun_raft_is_leader",
            "1 when this server is the Raft leader.",
            f64::from(u8::from(g.is_leader)),
        );
        gauge(
            &mut o,
            "bosun_raft_has_leader",
            "1 when a leader is known.",
            f64::from(u8::from(g.has_leader)),
        );
        gauge(
            &mut o,
            "bosun_raft_last_log_index",
            "Index of the last log entry.",
            g.last_log as f64,
        );
        gauge(
            &mut o,
            "bosun_raft_commit_index",
            "Committed log index.",
            g.commit as f64,
        );
        gauge(
            &mut o,
            "bosun_raft_applied_index",
            "Applied log index.",
            g.applied as f64,
        );
        gauge(
            &mut o,
            "bosun_store_revision",
            "Current store revision.",
            g.revision as f64,
        );
        gauge(
            &mut o,
            "bosun_store_db_bytes",
            "Size of the database on disk.",
            g.db_bytes as f64,
        );
        let counter = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "bosun_raft_leader_changes_total",
            "Leader changes seen.",
            &self.leader_changes,
        );
        counter(
            &mut o,
            "bosun_forwarded_batches_folded_total",
            "Followers' forwarded batches this leader folded into its own log entries.",
            &self.forwarded_folded,
        );
        counter(
            &mut o,
            "bosun_read_index_rounds_total",
            "Read-index rounds run for linearizable reads (concurrent reads share one).",
            &self.read_rounds,
        );
        counter(
            &mut o,
            "bosun_read_barriers_total",
            "Linearizable read barriers answered by those rounds.",
            &self.read_barriers,
        );
        let ok = self.proposals_ok.load(Ordering::Relaxed);
        let failed = self.proposals_failed.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP bosun_proposals_total Proposals by outcome.\n# TYPE bosun_proposals_total counter\nbosun_proposals_total{{outcome=\"ok\"}} {ok}\nbosun_proposals_total{{outcome=\"failed\"}} {failed}"
        );
        let _ = writeln!(
            o,
            "# HELP bosun_proposal_duration_seconds Time from proposal to applied.\n# TYPE bosun_proposal_duration_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "bosun_proposal_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "bosun_proposal_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            ok + failed
        );
        let _ = writeln!(
            o,
            "bosun_proposal_duration_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "bosun_proposal_duration_seconds_count {}", ok + failed);
        o
    }
}

/// Point-in-time Raft and store values.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Term.
    pub term: u64,
    /// Leader here.
    pub is_leader: bool,
    /// Leader known.
    pub has_leader: bool,
    /// Last log index.
    pub last_log: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Store revision.
    pub revision: i64,
    /// Database size.
    pub db_bytes: u64,
}
