//! Linearizability of each key's history, read as a register (read, write,
//! compare-and-set).
//!
//! The search is Wing and Gong's, with Lowe's memo of the configurations already seen
//! (the set of operations placed, and the register's value): repeatedly place one
//! operation that was sent before every unplaced operation was answered, and apply it;
//! backtrack when the register says no. A history is linearizable when every answered
//! operation can be placed. An operation without an answer may be placed anywhere after
//! it was sent, or never.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::history::{Call, Op, Outcome};

/// Most configurations one key's search may visit before it gives up.
pub const DEFAULT_BUDGET: usize = 1_000_000;

/// Why a history failed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No order of the key's operations explains what the clients saw.
    NotLinearizable {
        /// The key.
        key: String,
        /// The longest prefix the search could place, and the operations it could not
        /// place next (the evidence to read first).
        placed: usize,
        /// Answered operations the search could never place after that prefix.
        stuck: Vec<String>,
    },
    /// The search ran out of budget: neither proven nor refuted.
    Undecided {
        /// The key.
        key: String,
        /// Operations in the key's history.
        ops: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotLinearizable { key, placed, stuck } => write!(
                f,
                "key {key}: not linearizable: after {placed} operations placed, none of these fits: {}",
                stuck.join("; ")
            ),
            Failure::Undecided { key, ops } => write!(
                f,
                "key {key}: undecided ({ops} operations; the search exceeded its budget)"
            ),
        }
    }
}

/// What a passing check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Keys checked.
    pub keys: usize,
    /// Operations answered.
    pub answered: usize,
    /// Operations without an answer.
    pub unknown: usize,
}

/// Checks every key's history.
///
/// # Errors
/// The first key that is not linearizable, or whose search exceeded `budget`.
pub fn check(ops: &[Op], budget: usize) -> Result<Summary, Failure> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut summary = Summary::default();
    for (key, ops) in by_key {
        summary.keys += 1;
        summary.answered += ops.iter().filter(|o| o.completed.is_some()).count();
        summary.unknown += ops.iter().filter(|o| o.completed.is_none()).count();
        // Fast first: unanswered writes whose value nobody ever saw left out. That can
        // only fail to find an order that exists (never find one that does not), so a
        // failure is confirmed on the whole history.
        let pruned = prune_unseen_unknown_writes(&ops);
        if check_key(key, &pruned, budget).is_ok() {
            continue;
        }
        check_key(key, &ops, budget)?;
    }
    Ok(summary)
}

fn prune_unseen_unknown_writes<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let seen: HashSet<&str> = ops
        .iter()
        .flat_map(|o| {
            let read = match &o.outcome {
                Outcome::Read(Some(v)) => Some(v.as_str()),
                _ => None,
            };
            let expected = match &o.call {
                Call::Cas { expect, .. } => Some(expect.as_str()),
                _ => None,
            };
            read.into_iter().chain(expected)
        })
        .collect();
    ops.iter()
        .copied()
        .filter(|o| {
            let unseen_write = match &o.call {
                Call::Write(v) | Call::Cas { new: v, .. } => !seen.contains(v.as_str()),
                Call::Read => false,
            };
            !(o.outcome == Outcome::Unknown && unseen_write)
        })
        .collect()
}

/// An operation as the search sees it: values as small numbers.
#[derive(Debug, Clone, Copy)]
struct Step {
    call: u64,
    ret: u64,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read(Option<u32>),
    Write(u32),
    /// Compare-and-set known to have succeeded.
    CasOk(u32, u32),
    /// Compare-and-set known to have failed: the register did not hold the value.
    CasFailed(u32),
    /// Compare-and-set without an answer: either of the above, or nothing.
    CasUnknown(u32, u32),
}

type State = Option<u32>;

fn apply(kind: Kind, state: State) -> Option<State> {
    match kind {
        Kind::Read(v) => (v == state).then_some(state),
        Kind::Write(v) => Some(Some(v)),
        Kind::CasOk(e, n) => (state == Some(e)).then_some(Some(n)),
        Kind::CasFailed(e) => (state != Some(e)).then_some(state),
        // Placed means it took effect; so it must have matched.
        Kind::CasUnknown(e, n) => (state == Some(e)).then_some(Some(n)),
    }
}

fn steps(ops: &[&Op]) -> Vec<Step> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut id = |v: &str| -> u32 {
        let n = ids.len() as u32;
        *ids.entry(v.to_string()).or_insert(n)
    };
    let mut out: Vec<Step> = ops
        .iter()
        .filter_map(|o| {
            let kind = match (&o.call, &o.outcome) {
                (Call::Read, Outcome::Read(v)) => Kind::Read(v.as_deref().map(&mut id)),
                // A read without an answer changes nothing and says nothing.
                (Call::Read, _) => return None,
                (Call::Write(v), _) => Kind::Write(id(v)),
                (Call::Cas { expect, new }, Outcome::Cas(true)) => Kind::CasOk(id(expect), id(new)),
                (Call::Cas { expect, .. }, Outcome::Cas(false)) => Kind::CasFailed(id(expect)),
                (Call::Cas { expect, new }, _) => Kind::CasUnknown(id(expect), id(new)),
            };
            // Required to be placed only when answered: the outcome says so (a completion
            // time without an answer counts for nothing).
            let ret = match (&o.outcome, o.completed) {
                (Outcome::Unknown, _) | (_, None) => u64::MAX,
                (_, Some(c)) => c.as_nanos() as u64,
            };
            Some(Step {
                call: o.invoked.as_nanos() as u64,
                ret,
                kind,
            })
        })
        .collect();
    out.sort_by_key(|s| (s.call, s.ret));
    out
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Placed(Vec<u64>);

impl Placed {
    fn new(n: usize) -> Self {
        Placed(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        (self.0[i / 64] >> (i % 64)) & 1 == 1
    }
    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
}

fn check_key(key: &str, ops: &[&Op], budget: usize) -> Result<(), Failure> {
    let steps = steps(ops);
    let n = steps.len();
    let required = steps.iter().filter(|s| s.ret != u64::MAX).count();
    let mut placed = Placed::new(n);
    let mut placed_required = 0usize;
    let mut state: State = None;
    // The first operation not yet placed (everything before it is placed): the search
    // only looks from there.
    let mut seen: HashSet<(Placed, State)> = HashSet::new();
    // Each frame: the operation placed, the state before it, and where to resume.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut next_candidate = 0usize;
    let mut visited = 0usize;
    let mut best = (0usize, Vec::<usize>::new());
    loop {
        if placed_required == required {
            return Ok(());
        }
        visited += 1;
        if visited > budget {
            return Err(Failure::Undecided {
                key: key.to_string(),
                ops: n,
            });
        }
        // Every unplaced operation sent before the earliest answer among the unplaced
        // ones may go next.
        let first = (0..n).find(|&i| !placed.get(i)).unwrap_or(n);
        let horizon = (first..n)
            .filter(|&i| !placed.get(i))
            .map(|i| steps[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut i = next_candidate.max(first);
        while i < n && steps[i].call <= horizon {
            if !placed.get(i) {
                if let Some(after) = apply(steps[i].kind, state) {
                    placed.set(i, true);
                    if seen.insert((placed.clone(), after)) {
                        stack.push((i, state));
                        if steps[i].ret != u64::MAX {
                            placed_required += 1;
                        }
                        state = after;
                        next_candidate = 0;
                        advanced = true;
                        break;
                    }
                    placed.set(i, false);
                }
            }
            i += 1;
        }
        if advanced {
            continue;
        }
        if stack.len() >= best.0 {
            let stuck = (first..n)
                .filter(|&j| !placed.get(j) && steps[j].call <= horizon && steps[j].ret != u64::MAX)
                .collect();
            best = (stack.len(), stuck);
        }
        // Nothing fits here: take back the last placement and try the next candidate.
        let Some((last, before)) = stack.pop() else {
            let stuck = best.1.iter().map(|&j| describe(&steps[j], ops)).collect();
            return Err(Failure::NotLinearizable {
                key: key.to_string(),
                placed: best.0,
                stuck,
            });
        };
        placed.set(last, false);
        if steps[last].ret != u64::MAX {
            placed_required -= 1;
        }
        state = before;
        next_candidate = last + 1;
    }
}

/// The original operation behind a step, for a failure message.
fn describe(step: &Step, ops: &[&Op]) -> String {
    ops.iter()
        .find(|o| {
            o.invoked.as_nanos() as u64 == step.call
                && o.completed.map_or(u64::MAX, |c| c.as_nanos() as u64) == step.ret
        })
        .map(|o| {
            format!(
                "client {} {:?} -> {:?} (sent {:.3} s, answered {})",
                o.client,
                o.call,
                o.outcome,
                o.invoked.as_secs_f64(),
                o.completed
                    .map_or("never".to_string(), |c| format!("{:.3} s", c.as_secs_f64()))
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn op(client: usize, call: Call, at: (u64, Option<u64>), outcome: Outcome) -> Op {
        Op {
            client,
            key: "k".into(),
            call,
            invoked: Duration::from_millis(at.0),
            completed: at.1.map(Duration::from_millis),
            outcome,
        }
    }
    fn w(v: &str) -> Call {
        Call::Write(v.into())
    }
    fn cas(e: &str, n: &str) -> Call {
        Call::Cas {
            expect: e.into(),
            new: n.into(),
        }
    }
    fn read(v: Option<&str>) -> Outcome {
        Outcome::Read(v.map(Into::into))
    }

    #[test]
    fn sequential_reads_and_writes_are_linearizable() {
        let h = vec![
            op(0, Call::Read, (0, Some(1)), read(None)),
            op(0, w("a"), (2, Some(3)), Outcome::Written),
            op(1, Call::Read, (4, Some(5)), read(Some("a"))),
            op(1, cas("a", "b"), (6, Some(7)), Outcome::Cas(true)),
            op(0, Call::Read, (8, Some(9)), read(Some("b"))),
        ];
        assert_eq!(
            check(&h, DEFAULT_BUDGET),
            Ok(Summary {
                keys: 1,
                answered: 5,
                unknown: 0
            })
        );
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let h = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(0, w("b"), (2, Some(3)), Outcome::Written),
            op(1, Call::Read, (4, Some(5)), read(Some("a"))),
        ];
        match check(&h, DEFAULT_BUDGET) {
            Err(Failure::NotLinearizable { key, stuck, .. }) => {
                assert_eq!(key, "k");
                assert!(stuck.iter().any(|s| s.contains("Read")), "{stuck:?}");
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        // The write was acknowledged, yet a read that began after it sees the old state.
        let h = vec![
            op(0, w("a"), (0, Some(5)), Outcome::Written),
            op(1, Call::Read, (6, Some(7)), read(None)),
        ];
        assert!(matches!(
            check(&h, DEFAULT_BUDGET),
            Err(Failure::NotLinearizable { .. })
        ));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Both writes overlap both reads: b then a, and the reads see each in turn.
        let h = vec![
            op(0, w("a"), (0, Some(10)), Outcome::Written),
            op(1, w("b"), (1, Some(10)), Outcome::Written),
            op(2, Call::Read, (2, Some(9)), read(Some("b"))),
            op(3, Call::Read, (3, Some(9)), read(Some("a"))),
        ];
        assert!(check(&h, DEFAULT_BUDGET).is_ok());
        // But once both writes are answered, a later read cannot see the first and then
        // the second again.
        let mut h2 = h.clone();
        h2.push(op(2, Call::Read, (11, Some(12)), read(Some("a"))));
        h2.push(op(3, Call::Read, (13, Some(14)), read(Some("b"))));
        assert!(check(&h2, DEFAULT_BUDGET).is_err());
    }

    #[test]
    fn an_unanswered_write_may_take_effect_late_or_never() {
        let late = vec![
            op(0, w("a"), (0, None), Outcome::Unknown),
            op(1, Call::Read, (5, Some(6)), read(None)),
            op(1, Call::Read, (7, Some(8)), read(Some("a"))),
        ];
        assert!(check(&late, DEFAULT_BUDGET).is_ok());
        let never = vec![
            op(0, w("a"), (0, None), Outcome::Unknown),
            op(1, Call::Read, (5, Some(6)), read(None)),
        ];
        assert!(check(&never, DEFAULT_BUDGET).is_ok());
        // It cannot take effect before it was sent.
        let early = vec![
            op(1, Call::Read, (0, Some(1)), read(Some("a"))),
            op(0, w("a"), (2, None), Outcome::Unknown),
        ];
        assert!(check(&early, DEFAULT_BUDGET).is_err());
        // Nor take effect twice.
        let twice = vec![
            op(0, w("a"), (0, None), Outcome::Unknown),
            op(1, Call::Read, (5, Some(6)), read(Some("a"))),
            op(1, w("b"), (7, Some(8)), Outcome::Written),
            op(1, Call::Read, (9, Some(10)), read(Some("a"))),
        ];
        assert!(check(&twice, DEFAULT_BUDGET).is_err());
    }

    #[test]
    fn a_failed_compare_and_set_must_have_seen_another_value() {
        let ok = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, cas("x", "b"), (2, Some(3)), Outcome::Cas(false)),
        ];
        assert!(check(&ok, DEFAULT_BUDGET).is_ok());
        let bad = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, cas("a", "b"), (2, Some(3)), Outcome::Cas(false)),
        ];
        assert!(check(&bad, DEFAULT_BUDGET).is_err());
        // An unanswered write nobody saw can still explain a failed compare: the pruned
        // pass fails, the whole history passes.
        let explained = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(2, w("z"), (2, None), Outcome::Unknown),
            op(1, cas("a", "b"), (3, Some(4)), Outcome::Cas(false)),
        ];
        let refs: Vec<&Op> = explained.iter().collect();
        assert_eq!(prune_unseen_unknown_writes(&refs).len(), 2);
        assert!(check_key("k", &prune_unseen_unknown_writes(&refs), DEFAULT_BUDGET).is_err());
        assert!(check(&explained, DEFAULT_BUDGET).is_ok());
    }

    #[test]
    fn an_unanswered_compare_and_set_took_effect_only_if_it_matched() {
        // It matched and took effect: a later read sees its value.
        let took = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, cas("a", "b"), (2, None), Outcome::Unknown),
            op(0, Call::Read, (5, Some(6)), read(Some("b"))),
        ];
        assert!(check(&took, DEFAULT_BUDGET).is_ok());
        // Or it did nothing.
        let nothing = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, cas("a", "b"), (2, None), Outcome::Unknown),
            op(0, Call::Read, (5, Some(6)), read(Some("a"))),
        ];
        assert!(check(&nothing, DEFAULT_BUDGET).is_ok());
        // It cannot have taken effect against a value that was never there.
        let mismatched = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, cas("x", "b"), (2, None), Outcome::Unknown),
            op(0, Call::Read, (5, Some(6)), read(Some("b"))),
        ];
        assert!(check(&mismatched, DEFAULT_BUDGET).is_err());
    }

    #[test]
    fn keys_are_checked_apart_and_a_search_that_runs_out_says_so() {
        // Merged into one register, the read of a after b was written would be stale.
        let mut h = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(0, Call::Read, (4, Some(5)), read(Some("a"))),
        ];
        let mut other = op(1, w("b"), (2, Some(3)), Outcome::Written);
        other.key = "j".into();
        h.push(other);
        assert_eq!(check(&h, DEFAULT_BUDGET).map(|s| s.keys), Ok(2));
        let h = vec![
            op(0, w("a"), (0, Some(1)), Outcome::Written),
            op(1, Call::Read, (2, Some(3)), read(Some("a"))),
        ];
        assert!(matches!(check(&h, 1), Err(Failure::Undecided { .. })));
    }
}
