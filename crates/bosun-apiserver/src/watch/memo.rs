//! What the watches of one server share: every stored record they send or test is
//! rendered, and decoded, once for all of them instead of once per watch.
//!
//! Every watch of a resource sees every change of it, and without this each would check
//! and copy the stored JSON (or decode it, when the watch has a selector) on its own:
//! O(watches × changes) parsing. kube-apiserver likewise serializes an event once per
//! watch cache, not once per watcher. With this, a server parses each record once, and
//! a watch with a selector (each agent watches its node's pods) only tests the decoded
//! object; the previous version of a changed object, which such a watch also tests, was
//! usually decoded for the change that wrote it.
//!
//! Records are kept for a while after the first watch asks, oldest dropped first, within
//! a budget of bytes; a watch that falls further behind than that parses the record
//! itself, which costs time and nothing else.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Bytes of records kept: their stored size times [`COST_FACTOR`], to count what the
/// decoded form of a record takes beside its stored form.
pub const BUDGET: usize = 64 << 20;

/// A decoded `Value` takes about four times its JSON; the rendered copy once more.
const COST_FACTOR: usize = 5;

/// One stored record (a key at a revision): what watches send for it, and what it
/// decodes to, each computed by the first watch that needs it.
#[derive(Debug)]
pub struct Record {
    key: Box<[u8]>,
    sent: OnceLock<Option<Arc<[u8]>>>,
    decoded: OnceLock<Option<Arc<Value>>>,
}

impl Record {
    fn new(key: &[u8]) -> Self {
        Record {
            key: key.into(),
            sent: OnceLock::new(),
            decoded: OnceLock::new(),
        }
    }

    /// The JSON that watches send for this record, made by `render` the first time.
    pub fn sent(&self, render: impl FnOnce() -> Option<Vec<u8>>) -> Option<Arc<[u8]>> {
        self.sent.get_or_init(|| render().map(Arc::from)).clone()
    }

    /// The record decoded, by `decode` the first time.
    pub fn decoded(&self, decode: impl FnOnce() -> Option<Value>) -> Option<Arc<Value>> {
        self.decoded.get_or_init(|| decode().map(Arc::new)).clone()
    }
}

/// Identifies a record: its revision, and a seeded hash of its key (the key itself is
/// kept in the [`Record`] and compared, so a collision is a miss, never a wrong object).
type Id = (i64, u64);

/// The shared records of one server (cheap to share behind its `Arc`).
#[derive(Debug)]
pub struct Memo {
    hasher: std::collections::hash_map::RandomState,
    budget: usize,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    records: HashMap<Id, Arc<Record>>,
    /// Oldest first, with each record's cost.
    order: VecDeque<(Id, usize)>,
    cost: usize,
}

impl Default for Memo {
    fn default() -> Self {
        Memo::with_budget(BUDGET)
    }
}

impl Memo {
    /// A memo keeping records worth up to `budget` bytes (see [`BUDGET`]).
    pub fn with_budget(budget: usize) -> Self {
        Memo {
            hasher: std::collections::hash_map::RandomState::new(),
            budget,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The record of `key` at `revision`, whose stored form has `size` bytes: the one
    /// kept, or a new one, kept unless it alone is over the budget.
    pub fn record(&self, key: &[u8], revision: i64, size: usize) -> Arc<Record> {
        let id = (revision, self.hasher.hash_one(key));
        let cost = size.saturating_add(key.len()).saturating_mul(COST_FACTOR);
        // A poisoned lock only means another watch panicked while holding it; what it
        // guards stays consistent (each step below leaves it whole).
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = kept.records.get(&id) {
            if *r.key == *key {
                return r.clone();
            }
            // Another key with the same revision and hash: not kept, computed apart.
            return Arc::new(Record::new(key));
        }
        let r = Arc::new(Record::new(key));
        if cost > self.budget {
            return r;
        }
        kept.records.insert(id, r.clone());
        kept.order.push_back((id, cost));
        kept.cost += cost;
        while kept.cost > self.budget {
            let Some((old, c)) = kept.order.pop_front() else {
                break;
            };
            kept.records.remove(&old);
            kept.cost -= c;
        }
        r
    }

    /// How many records are kept, and their cost in bytes.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.records.len(), kept.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_record_is_rendered_and_decoded_once_for_every_watch() {
        let memo = Memo::default();
        let renders = AtomicUsize::new(0);
        let decodes = AtomicUsize::new(0);
        for _ in 0..3 {
            let r = memo.record(b"/registry/pods/a/p", 7, 10);
            let sent = r.sent(|| {
                renders.fetch_add(1, Ordering::Relaxed);
                Some(b"{}".to_vec())
            });
            assert_eq!(sent.as_deref(), Some(&b"{}"[..]));
            let obj = r.decoded(|| {
                decodes.fetch_add(1, Ordering::Relaxed);
                Some(serde_json::json!({"a": 1}))
            });
            assert_eq!(obj.as_deref(), Some(&serde_json::json!({"a": 1})));
        }
        assert_eq!(renders.load(Ordering::Relaxed), 1);
        assert_eq!(decodes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn another_key_or_revision_is_another_record() {
        let memo = Memo::default();
        let a = memo.record(b"k1", 7, 10);
        a.sent(|| Some(b"1".to_vec()));
        let b = memo.record(b"k2", 7, 10);
        assert_eq!(b.sent(|| Some(b"2".to_vec())).as_deref(), Some(&b"2"[..]));
        let c = memo.record(b"k1", 8, 10);
        assert_eq!(c.sent(|| Some(b"3".to_vec())).as_deref(), Some(&b"3"[..]));
        assert_eq!(memo.kept().0, 3);
    }

    #[test]
    fn the_oldest_records_go_when_over_the_budget() {
        // Each record costs (10 + 2) × 5 = 60: three fit in 200.
        let memo = Memo::with_budget(200);
        for rev in 1..=5 {
            memo.record(b"k1", rev, 10)
                .sent(|| Some(vec![b'0' + rev as u8]));
        }
        assert_eq!(memo.kept(), (3, 180));
        // Revision 1 went, so it is rendered again; revision 5 was kept.
        let again = memo.record(b"k1", 5, 10).sent(|| Some(b"new".to_vec()));
        assert_eq!(again.as_deref(), Some(&b"5"[..]));
        let gone = memo.record(b"k1", 1, 10).sent(|| Some(b"new".to_vec()));
        assert_eq!(gone.as_deref(), Some(&b"new"[..]));
        // A record over the whole budget is computed and not kept.
        let (n, cost) = memo.kept();
        memo.record(b"big", 9, 1000);
        assert_eq!(memo.kept(), (n, cost));
    }

    #[test]
    fn a_failed_render_is_remembered_as_failed() {
        let memo = Memo::default();
        let r = memo.record(b"k", 1, 1);
        assert!(r.sent(|| None).is_none());
        assert!(memo
            .record(b"k", 1, 1)
            .sent(|| Some(b"x".to_vec()))
            .is_none());
    }
}
