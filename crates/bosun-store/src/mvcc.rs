//! The key-value state machine's logic, in memory and deterministic: revisions, versions,
//! transactions, leases, compaction. Persistence lives in `state_machine`; this module only
//! decides what changes, and records it in [`Changes`] so that the caller can write the
//! changes and the applied log id in one RocksDB batch.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::command::*;

/// A lease as the state machine knows it. Its deadline is not here: expiry is decided by
/// the leader's clock and enters the log as a revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Keys attached.
    pub keys: BTreeSet<Vec<u8>>,
}

/// What one or more applied commands changed, for the persistence layer.
#[derive(Debug, Default)]
pub struct Changes {
    /// Events in order, with their sub-index within the revision.
    pub events: Vec<(u32, Event)>,
    /// Leases created: (id, ttl).
    pub leases_granted: Vec<(i64, i64)>,
    /// Leases removed.
    pub leases_revoked: Vec<i64>,
    /// A compaction to this revision.
    pub compacted_to: Option<i64>,
}

impl Changes {
    /// Appends `other`'s changes after ours.
    pub fn absorb(&mut self, other: Changes) {
        self.events.extend(other.events);
        self.leases_granted.extend(other.leases_granted);
        self.leases_revoked.extend(other.leases_revoked);
        if other.compacted_to.is_some() {
            self.compacted_to = other.compacted_to;
        }
    }
}

/// Source of past events, for reads at an old revision.
pub trait History {
    /// Events with a revision above `rev`, oldest first.
    ///
    /// # Errors
    /// When the history cannot be read.
    fn events_after(&self, rev: i64) -> std::io::Result<Vec<Event>>;
}

/// The current state of the key space.
#[derive(Debug, Default, Clone)]
pub struct Mvcc {
    /// Current records by key.
    pub kvs: BTreeMap<Vec<u8>, KeyValue>,
    /// Current revision (the last write's).
    pub revision: i64,
    /// History before this revision is gone.
    pub compact_revision: i64,
    /// Leases by id.
    pub leases: BTreeMap<i64, LeaseState>,
}

/// Error of a read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Refused like a command would be.
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// History could not be read.
    #[error("reading history: {0}")]
    History(#[from] std::io::Error),
}

fn range_bounds(r: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = Bound::Included(r.key.clone());
    let end = if r.end.is_empty() {
        Bound::Included(r.key.clone())
    } else if r.end == [0] {
        Bound::Unbounded
    } else {
        Bound::Excluded(r.end.clone())
    };
    (start, end)
}

fn valid_bounds(r: &KeyRange) -> bool {
    r.end.is_empty() || r.end == [0] || r.key < r.end
}

impl Mvcc {
    /// Records in `range` at the current revision, in key order.
    pub fn current<'a>(&'a self, range: &KeyRange) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let ok = valid_bounds(range);
        let iter = if ok {
            Some(self.kvs.range(range_bounds(range)))
        } else {
            None
        };
        iter.into_iter().flatten().map(|(_, v)| v)
    }

    /// Serves a range read, at the current or a past revision.
    ///
    /// # Errors
    /// Compacted or future revision; history read failures.
    pub fn range(&self, req: &RangeReq, history: &dyn History) -> Result<RangeResult, ReadError> {
        let mut kvs: Vec<KeyValue> = if req.revision == 0 {
            self.current(&req.range).cloned().collect()
        } else {
            if req.revision > self.revision {
                return Err(ApplyError::FutureRevision.into());
            }
            if req.revision < self.compact_revision {
                return Err(ApplyError::Compacted.into());
            }
            let mut at: BTreeMap<Vec<u8>, KeyValue> = self
                .current(&req.range)
                .map(|kv| (kv.key.clone(), kv.clone()))
                .collect();
            // Undo every change made after the requested revision, newest first.
            for ev in history.events_after(req.revision)?.into_iter().rev() {
                if !req.range.contains(&ev.kv.key) {
                    continue;
                }
                match ev.prev {
                    Some(p) => at.insert(ev.kv.key.clone(), p),
                    None => at.remove(&ev.kv.key),
                };
            }
            at.into_values().collect()
        };
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        let count = kvs.len() as i64;
        if req.count_only {
            return Ok(RangeResult {
                kvs: vec![],
                more: false,
                count,
            });
        }
        let order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (o, _) => o,
        };
        if order != SortOrder::None {
            kvs.sort_by(|a, b| {
                let c = match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    c.reverse()
                } else {
                    c
                }
            });
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResult { kvs, more, count })
    }

    /// Applies one command proposed in log term `entry_term`, recording its changes.
    ///
    /// The outer `Result` is a local failure (history unreadable): the caller must stop
    /// applying rather than diverge from the other replicas. The inner one is the
    /// command's deterministic outcome; a refused command leaves the state untouched.
    ///
    /// # Errors
    /// When history cannot be read.
    pub fn apply(
        &mut self,
        req: &Request,
        entry_term: u64,
        history: &dyn History,
        changes: &mut Changes,
    ) -> std::io::Result<Result<CommandResult, ApplyError>> {
        let mut io_error = None;
        let res = self.apply_inner(req, entry_term, history, changes, &mut io_error);
        match io_error {
            Some(e) => Err(e),
            None => Ok(res),
        }
    }

    fn apply_inner(
        &mut self,
        req: &Request,
        entry_term: u64,
        history: &dyn History,
        changes: &mut Changes,
        io_error: &mut Option<std::io::Error>,
    ) -> Result<CommandResult, ApplyError> {
        if let Some(decided) = req.fence_term {
            if decided != entry_term {
                return Err(ApplyError::Fenced {
                    decided,
                    proposed: entry_term,
                });
            }
        }
        match &req.command {
            Command::Batch(reqs) => {
                let mut out = Vec::with_capacity(reqs.len());
                for sub in reqs {
                    if matches!(sub.command, Command::Batch(_)) {
                        out.push((self.revision, Err(ApplyError::NestedBatch)));
                        continue;
                    }
                    // Earlier requests of the batch are history for later ones.
                    let mut local = Changes::default();
                    let r = {
                        let hist = ChainedPairs {
                            first: history,
                            then: &changes.events,
                        };
                        self.apply_inner(sub, entry_term, &hist, &mut local, io_error)
                    };
                    if io_error.is_some() {
                        return Err(ApplyError::Compacted);
                    }
                    changes.absorb(local);
                    out.push((self.revision, r));
                }
                Ok(CommandResult::Batch(out))
            }
            Command::Txn(txn) => {
                let mut tx = WriteTx::new(self.revision + 1);
                match self.txn(txn, &mut tx, history, io_error) {
                    Ok(res) => {
                        self.finish(tx, changes);
                        Ok(CommandResult::Txn(res))
                    }
                    Err(e) => {
                        // A nested transaction may be refused after outer ops changed
                        // memory: undo them, so a refused command has no effect at all.
                        self.rollback(tx);
                        Err(e)
                    }
                }
            }
            Command::Compact(rev) => {
                if *rev <= self.compact_revision {
                    return Err(ApplyError::Compacted);
                }
                if *rev > self.revision {
                    return Err(ApplyError::FutureRevision);
                }
                self.compact_revision = *rev;
                changes.compacted_to = Some(*rev);
                Ok(CommandResult::Compacted)
            }
            Command::LeaseGrant { id, ttl } => {
                if self.leases.contains_key(id) {
                    return Err(ApplyError::LeaseExists);
                }
                self.leases.insert(
                    *id,
                    LeaseState {
                        ttl: *ttl,
                        keys: BTreeSet::new(),
                    },
                );
                changes.leases_granted.push((*id, *ttl));
                Ok(CommandResult::LeaseGranted { id: *id, ttl: *ttl })
            }
            Command::LeaseRevoke { id } => {
                let Some(lease) = self.leases.remove(id) else {
                    return Err(ApplyError::LeaseNotFound);
                };
                let mut tx = WriteTx::new(self.revision + 1);
                for key in lease.keys {
                    self.delete_key(&key, &mut tx);
                }
                self.finish(tx, changes);
                changes.leases_revoked.push(*id);
                Ok(CommandResult::LeaseRevoked)
            }
        }
    }

    fn rollback(&mut self, tx: WriteTx) {
        for ev in tx.events.into_iter().rev() {
            let key = ev.kv.key.clone();
            if ev.kv.lease != 0 {
                if let Some(l) = self.leases.get_mut(&ev.kv.lease) {
                    l.keys.remove(&key);
                }
            }
            match ev.prev {
                Some(p) => {
                    if p.lease != 0 {
                        if let Some(l) = self.leases.get_mut(&p.lease) {
                            l.keys.insert(key.clone());
                        }
                    }
                    self.kvs.insert(key, p);
                }
                None => {
                    self.kvs.remove(&key);
                }
            }
        }
    }

    fn finish(&mut self, tx: WriteTx, changes: &mut Changes) {
        if !tx.events.is_empty() {
            self.revision = tx.rev;
            changes.events.extend(
                tx.events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| (i as u32, e)),
            );
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let check = |kv: Option<&KeyValue>| c.holds_for(kv);
        if c.range.is_single() {
            check(self.kvs.get(&c.range.key))
        } else {
            self.current(&c.range).all(|kv| check(Some(kv)))
        }
    }

    fn txn(
        &mut self,
        txn: &TxnReq,
        tx: &mut WriteTx,
        history: &dyn History,
        io_error: &mut Option<std::io::Error>,
    ) -> Result<TxnResult, ApplyError> {
        let succeeded = txn.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Check lease references and ignore_* preconditions before changing anything, so a
        // refused transaction has no effect at all.
        self.precheck(ops)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                Op::Range(r) => {
                    // A range reads the state before this transaction's own writes
                    // unless it names no revision (then it sees them, as in etcd).
                    let with_own = Chained {
                        first: history,
                        then: &tx.events,
                    };
                    match self.range(r, &with_own) {
                        Ok(res) => OpResult::Range(res),
                        Err(ReadError::Refused(a)) => return Err(a),
                        Err(ReadError::History(e)) => {
                            *io_error = Some(e);
                            return Err(ApplyError::Compacted);
                        }
                    }
                }
                Op::Put(p) => {
                    let prev = self.put(p, tx);
                    OpResult::Put {
                        prev: if p.prev_kv { prev } else { None },
                    }
                }
                Op::Delete(d) => {
                    let keys: Vec<Vec<u8>> =
                        self.current(&d.range).map(|kv| kv.key.clone()).collect();
                    let mut prev = Vec::new();
                    for k in &keys {
                        if let Some(p) = self.delete_key(k, tx) {
                            if d.prev_kv {
                                prev.push(p);
                            }
                        }
                    }
                    OpResult::Delete {
                        deleted: keys.len() as i64,
                        prev,
                    }
                }
                Op::Txn(inner) => OpResult::Txn(self.txn(inner, tx, history, io_error)?),
            });
        }
        Ok(TxnResult {
            succeeded,
            responses,
        })
    }

    fn precheck(&self, ops: &[Op]) -> Result<(), ApplyError> {
        for op in ops {
            match op {
                Op::Put(p) => {
                    let existing = self.kvs.get(&p.key);
                    if (p.ignore_value || p.ignore_lease) && existing.is_none() {
                        return Err(ApplyError::KeyNotFound);
                    }
                    if !p.ignore_lease && p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(ApplyError::LeaseNotFound);
                    }
                }
                Op::Range(r) if r.revision != 0 => {
                    if r.revision > self.revision {
                        return Err(ApplyError::FutureRevision);
                    }
                    if r.revision < self.compact_revision {
                        return Err(ApplyError::Compacted);
                    }
                }
                // Both branches: which one runs depends on state the outer ops may change,
                // so a refusal anywhere refuses the whole transaction up front.
                Op::Txn(t) => {
                    self.precheck(&t.success)?;
                    self.precheck(&t.failure)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn put(&mut self, p: &PutReq, tx: &mut WriteTx) -> Option<KeyValue> {
        let prev = self.kvs.get(&p.key).cloned();
        let rev = tx.rev;
        let value = if p.ignore_value {
            prev.as_ref().map(|k| k.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |k| k.lease)
        } else {
            p.lease
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |k| k.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        if let Some(old) = prev.as_ref().filter(|o| o.lease != 0 && o.lease != lease) {
            if let Some(l) = self.leases.get_mut(&old.lease) {
                l.keys.remove(&p.key);
            }
        }
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(p.key.clone());
            }
        }
        self.kvs.insert(p.key.clone(), kv.clone());
        tx.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev: prev.clone(),
        });
        prev
    }

    fn delete_key(&mut self, key: &[u8], tx: &mut WriteTx) -> Option<KeyValue> {
        let prev = self.kvs.remove(key)?;
        if prev.lease != 0 {
            if let Some(l) = self.leases.get_mut(&prev.lease) {
                l.keys.remove(key);
            }
        }
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: tx.rev,
            ..Default::default()
        };
        tx.events.push(Event {
            kind: EventKind::Delete,
            kv,
            prev: Some(prev.clone()),
        });
        Some(prev)
    }
}

/// History followed by events not yet persisted.
struct Chained<'a> {
    first: &'a dyn History,
    then: &'a [Event],
}

impl History for Chained<'_> {
    fn events_after(&self, rev: i64) -> std::io::Result<Vec<Event>> {
        let mut out = self.first.events_after(rev)?;
        out.extend(
            self.then
                .iter()
                .filter(|e| e.kv.mod_revision > rev)
                .cloned(),
        );
        Ok(out)
    }
}

/// History followed by events of earlier requests of the same batch.
struct ChainedPairs<'a> {
    first: &'a dyn History,
    then: &'a [(u32, Event)],
}

impl History for ChainedPairs<'_> {
    fn events_after(&self, rev: i64) -> std::io::Result<Vec<Event>> {
        let mut out = self.first.events_after(rev)?;
        out.extend(
            self.then
                .iter()
                .filter(|(_, e)| e.kv.mod_revision > rev)
                .map(|(_, e)| e.clone()),
        );
        Ok(out)
    }
}

/// The events of one revision being built.
struct WriteTx {
    rev: i64,
    events: Vec<Event>,
}

impl WriteTx {
    fn new(rev: i64) -> Self {
        WriteTx {
            rev,
            events: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHistory(Vec<Event>);
    impl History for NoHistory {
        fn events_after(&self, rev: i64) -> std::io::Result<Vec<Event>> {
            Ok(self
                .0
                .iter()
                .filter(|e| e.kv.mod_revision > rev)
                .cloned()
                .collect())
        }
    }

    fn put(k: &str, v: &str) -> Request {
        Request::new(Command::Txn(TxnReq {
            success: vec![Op::Put(PutReq {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })],
            ..Default::default()
        }))
    }

    fn apply(
        m: &mut Mvcc,
        h: &mut NoHistory,
        r: &Request,
        term: u64,
    ) -> Result<CommandResult, ApplyError> {
        let mut ch = Changes::default();
        let res = m.apply(r, term, &*h, &mut ch).unwrap();
        h.0.extend(ch.events.into_iter().map(|(_, e)| e));
        res
    }

    fn single(k: &str) -> KeyRange {
        KeyRange {
            key: k.into(),
            end: vec![],
        }
    }

    #[test]
    fn every_write_increments_the_revision_and_the_version() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        apply(&mut m, &mut h, &put("a", "1"), 1).unwrap();
        apply(&mut m, &mut h, &put("a", "2"), 1).unwrap();
        apply(&mut m, &mut h, &put("b", "1"), 1).unwrap();
        assert_eq!(m.revision, 3);
        let a = &m.kvs[b"a".as_slice()];
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
    }

    #[test]
    fn a_read_at_a_past_revision_sees_the_old_state() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        apply(&mut m, &mut h, &put("a", "1"), 1).unwrap();
        apply(&mut m, &mut h, &put("a", "2"), 1).unwrap();
        let req = RangeReq {
            range: single("a"),
            revision: 1,
            ..Default::default()
        };
        let r = m.range(&req, &h).unwrap();
        assert_eq!(r.kvs[0].value, b"1");
        let req = RangeReq {
            range: single("a"),
            revision: 9,
            ..Default::default()
        };
        assert!(matches!(
            m.range(&req, &h),
            Err(ReadError::Refused(ApplyError::FutureRevision))
        ));
    }

    #[test]
    fn a_fenced_command_from_another_term_is_rejected_and_changes_nothing() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        let mut r = put("a", "1");
        r.fence_term = Some(3);
        let err = apply(&mut m, &mut h, &r, 4).unwrap_err();
        assert_eq!(
            err,
            ApplyError::Fenced {
                decided: 3,
                proposed: 4
            }
        );
        assert!(m.kvs.is_empty());
        assert_eq!(m.revision, 0);
        apply(&mut m, &mut h, &r, 3).unwrap();
        assert_eq!(m.revision, 1);
    }

    #[test]
    fn txn_compares_mod_revision_like_a_compare_and_swap() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        apply(&mut m, &mut h, &put("a", "1"), 1).unwrap();
        let cas = |rev: i64| {
            Request::new(Command::Txn(TxnReq {
                compare: vec![Compare {
                    range: single("a"),
                    op: CompareOp::Equal,
                    target: CompareTarget::Mod(rev),
                }],
                success: vec![Op::Put(PutReq {
                    key: "a".into(),
                    value: "x".into(),
                    ..Default::default()
                })],
                failure: vec![],
            }))
        };
        let ok = apply(&mut m, &mut h, &cas(1), 1).unwrap();
        assert!(matches!(
            ok,
            CommandResult::Txn(TxnResult {
                succeeded: true,
                ..
            })
        ));
        let stale = apply(&mut m, &mut h, &cas(1), 1).unwrap();
        assert!(matches!(
            stale,
            CommandResult::Txn(TxnResult {
                succeeded: false,
                ..
            })
        ));
        assert_eq!(m.revision, 2);
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        apply(
            &mut m,
            &mut h,
            &Request::new(Command::LeaseGrant { id: 7, ttl: 5 }),
            1,
        )
        .unwrap();
        let mut p = put("a", "1");
        if let Command::Txn(t) = &mut p.command {
            if let Op::Put(pr) = &mut t.success[0] {
                pr.lease = 7;
            }
        }
        apply(&mut m, &mut h, &p, 1).unwrap();
        apply(
            &mut m,
            &mut h,
            &Request::new(Command::LeaseRevoke { id: 7 }),
            1,
        )
        .unwrap();
        assert!(m.kvs.is_empty());
        assert!(m.leases.is_empty());
        // A put naming a missing lease is refused without a new revision.
        let rev = m.revision;
        assert_eq!(
            apply(&mut m, &mut h, &p, 1).unwrap_err(),
            ApplyError::LeaseNotFound
        );
        assert_eq!(m.revision, rev);
    }

    #[test]
    fn a_refused_nested_transaction_leaves_no_trace_in_memory() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        apply(&mut m, &mut h, &put("a", "1"), 1).unwrap();
        let before = m.kvs.clone();
        let txn = Request::new(Command::Txn(TxnReq {
            success: vec![
                Op::Delete(DeleteReq {
                    range: single("a"),
                    prev_kv: false,
                }),
                Op::Txn(TxnReq {
                    success: vec![Op::Put(PutReq {
                        key: "a".into(),
                        ignore_value: true,
                        ..Default::default()
                    })],
                    ..Default::default()
                }),
            ],
            ..Default::default()
        }));
        assert_eq!(
            apply(&mut m, &mut h, &txn, 1).unwrap_err(),
            ApplyError::KeyNotFound
        );
        assert_eq!(m.kvs, before);
        assert_eq!(m.revision, 1);
    }

    #[test]
    fn a_batch_applies_each_request_with_its_own_outcome_and_revision() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        let mut fenced = put("b", "2");
        fenced.fence_term = Some(9);
        let batch = Request::new(Command::Batch(vec![put("a", "1"), fenced, put("c", "3")]));
        let CommandResult::Batch(out) = apply(&mut m, &mut h, &batch, 1).unwrap() else {
            panic!("not a batch result")
        };
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, 1);
        assert!(matches!(out[1].1, Err(ApplyError::Fenced { .. })));
        assert_eq!(out[1].0, 1);
        assert_eq!(out[2].0, 2);
        assert_eq!(m.revision, 2);
        assert!(!m.kvs.contains_key(b"b".as_slice()));
    }

    #[test]
    fn limit_and_count_report_more() {
        let (mut m, mut h) = (Mvcc::default(), NoHistory(vec![]));
        for k in ["a", "b", "c"] {
            apply(&mut m, &mut h, &put(k, "v"), 1).unwrap();
        }
        let req = RangeReq {
            range: KeyRange {
                key: "a".into(),
                end: vec![0],
            },
            limit: 2,
            ..Default::default()
        };
        let r = m.range(&req, &h).unwrap();
        assert_eq!((r.kvs.len(), r.count, r.more), (2, 3, true));
    }
}
