//! The Raft log and vote in RocksDB ([`openraft::storage::RaftLogStorage`]).
//!
//! Appends are written with `sync = true` before openraft is told the IO completed, so an
//! acknowledged entry survives a power cut. (openraft's own RocksDB example skips this.)
//! A dedicated writer thread does the writing, folding queued appends into one fsync.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::oneshot;

use crate::db::{be, CF_LOG, CF_RAFT};
use crate::types::typ::{Entry, LogId, StorageError, Vote};
use crate::types::TypeConfig;

/// The newest entries, shared by the store and its writer thread.
type Newest = Arc<Mutex<Recent>>;

/// Durable entries kept in memory at most (besides those not yet durable)...
const RECENT_ENTRIES: usize = 1024;
/// ...and their encoded bytes at most.
const RECENT_BYTES: usize = 8 << 20;

/// The newest entries in memory: those handed to the writer but not yet durable (readable
/// meanwhile), and the last durable ones within [`RECENT_ENTRIES`] and [`RECENT_BYTES`].
/// Replication and the state machine read what was just appended, so they read it here
/// instead of seeking and decoding it from RocksDB. Always a run of consecutive indexes
/// at the end of the log: appends add at its end, a truncation cuts its end, the writer
/// drops durable entries from its front, a purge drops what it purges.
#[derive(Default)]
struct Recent {
    entries: BTreeMap<u64, Kept>,
    /// Encoded size of `entries`.
    bytes: usize,
}

struct Kept {
    entry: Entry,
    size: usize,
    durable: bool,
}

impl Recent {
    fn insert(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        let kept = Kept {
            entry,
            size,
            durable: false,
        };
        self.bytes += size;
        if let Some(old) = self.entries.insert(index, kept) {
            self.bytes -= old.size;
        }
    }

    /// Drops the entries from `index` on (a truncation).
    fn cut_from(&mut self, index: u64) {
        let gone = self.entries.split_off(&index);
        self.bytes -= gone.values().map(|k| k.size).sum::<usize>();
    }

    /// Drops the entries up to `index` (a purge).
    fn cut_upto(&mut self, index: u64) {
        let kept = self.entries.split_off(&(index.saturating_add(1)));
        let gone = std::mem::replace(&mut self.entries, kept);
        self.bytes -= gone.values().map(|k| k.size).sum::<usize>();
    }

    /// Marks the entries written as durable (unless replaced meanwhile: truncated and
    /// appended again), then drops the oldest durable ones beyond the bounds.
    fn written(&mut self, ids: &[LogId]) {
        for id in ids {
            if let Some(k) = self.entries.get_mut(&id.index) {
                if k.entry.log_id == *id {
                    k.durable = true;
                }
            }
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            match self.entries.first_entry() {
                Some(first) if first.get().durable => {
                    self.bytes -= first.remove().size;
                }
                _ => break,
            }
        }
    }

    /// The entries of `range` from `start` on, if memory holds all of them that exist:
    /// `start` is at or after the first entry kept.
    fn read<RB: RangeBounds<u64>>(&self, start: u64, range: &RB) -> Option<Vec<Entry>> {
        let first = *self.entries.keys().next()?;
        (start >= first).then(|| self.within(start, range))
    }

    fn within<RB: RangeBounds<u64>>(&self, start: u64, range: &RB) -> Vec<Entry> {
        self.entries
            .range(start..)
            .take_while(|(i, _)| range.contains(*i))
            .map(|(_, k)| k.entry.clone())
            .collect()
    }
}

/// One unit of work for the log writer thread.
enum Job {
    /// Entries to append; openraft is told when they are durable.
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        ids: Vec<LogId>,
        done: LogFlushed<TypeConfig>,
    },
    /// Any other change, in order with the appends; `reply` when durable.
    Change {
        change: Change,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
}

enum Change {
    PutMeta(&'static str, Vec<u8>),
    /// The committed log id: an optimisation (less replay on restart), so a group holding
    /// nothing else is written without an fsync of its own; the next synced group makes
    /// it durable.
    Committed(Vec<u8>),
    Truncate(u64),
    Purge {
        upto: u64,
        purged: Vec<u8>,
    },
}

/// Most jobs folded into one synced write.
const MAX_GROUP: usize = 512;

/// The log store. Cheap to clone: readers share the database and the writer.
///
/// All changes go through one writer thread, in order. It folds whatever is queued into
/// one `WriteBatch` with one fsync (group commit) and only then completes openraft's
/// callbacks, so the Raft core keeps working (and batching) while the disk syncs.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    newest: Newest,
    writer: Arc<Writer>,
}

/// The writer thread's handle. Dropping the last one closes the queue and joins the
/// thread, so the thread never outlives the store (a detached thread still holding
/// RocksDB while the process exits aborts it).
struct Writer {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the log writer thread panicked");
            }
        }
    }
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// Runs blocking disk work without stalling the other tasks of a multi-threaded runtime.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// The writer thread: group commit of queued jobs, in order.
fn write_loop(db: Arc<DB>, newest: Newest, rx: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let res = (|| -> Result<(), String> {
            let log = db.cf_handle(CF_LOG).ok_or("column family log missing")?;
            let raft = db.cf_handle(CF_RAFT).ok_or("column family raft missing")?;
            let mut batch = WriteBatch::default();
            for job in &jobs {
                match job {
                    Job::Append { entries, .. } => {
                        for (idx, bytes) in entries {
                            batch.put_cf(log, be(*idx), bytes);
                        }
                    }
                    Job::Change { change, .. } => match change {
                        Change::PutMeta(key, v) => batch.put_cf(raft, key, v),
                        Change::Committed(v) => batch.put_cf(raft, "committed", v),
                        Change::Truncate(from) => {
                            batch.delete_range_cf(log, be(*from), be(u64::MAX))
                        }
                        Change::Purge { upto, purged } => {
                            batch.put_cf(raft, "purged", purged);
                            batch.delete_range_cf(log, be(0), be(upto + 1));
                        }
                    },
                }
            }
            let durable = jobs.iter().any(|j| {
                !matches!(
                    j,
                    Job::Change {
                        change: Change::Committed(_),
                        ..
                    }
                )
            });
            let opts = if durable {
                synced()
            } else {
                WriteOptions::default()
            };
            db.write_opt(batch, &opts).map_err(|e| e.to_string())
        })();
        for job in jobs {
            match job {
                Job::Append { ids, done, .. } => {
                    if res.is_ok() {
                        newest
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .written(&ids);
                    }
                    done.log_io_completed(res.clone().map_err(std::io::Error::other));
                }
                Job::Change { reply, .. } => {
                    if let Some(r) = reply {
                        let _ = r.send(res.clone());
                    }
                }
            }
        }
        if let Err(e) = res {
            tracing::error!(error = %e, "raft log write failed");
        }
    }
}

impl LogStore {
    /// A log store on `db`, with its writer thread (which ends when the last clone drops).
    pub fn new(db: Arc<DB>) -> Self {
        let newest: Newest = Arc::default();
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let (d, p) = (db.clone(), newest.clone());
        let thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_loop(d, p, rx))
            .map_err(|e| tracing::error!(error = %e, "cannot start the log writer thread"))
            .ok();
        LogStore {
            db,
            newest,
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread,
            }),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or_else(|| {
            read_err(std::io::Error::other(format!(
                "column family {name} missing"
            )))
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let cf = self.cf(CF_RAFT)?;
        match self.db.get_cf(cf, key).map_err(read_err)? {
            None => Ok(None),
            Some(b) => bincode::deserialize(&b).map(Some).map_err(read_err),
        }
    }

    fn submit(&self, job: Job) -> Result<(), StorageError> {
        let gone = || write_err(std::io::Error::other("log writer thread is gone"));
        let Some(tx) = self.writer.tx.as_ref() else {
            return Err(gone());
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            // A full queue (the disk is behind): wait for room without stalling the runtime.
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                blocking(|| tx.send(job)).map_err(|_| gone())
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(gone()),
        }
    }

    /// Queues a change and waits until it is durable.
    async fn change(&self, change: Change) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Change {
            change,
            reply: Some(tx),
        })?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(std::io::Error::other(e))),
            Err(_) => Err(write_err(std::io::Error::other(
                "log writer thread is gone",
            ))),
        }
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        v: &T,
    ) -> Result<(), StorageError> {
        let b = bincode::serialize(v).map_err(write_err)?;
        self.change(Change::PutMeta(key, b)).await
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        // Memory first: anything leaving it is on disk by then.
        let memory_last = self
            .newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .last_key_value()
            .map(|(_, k)| k.entry.log_id);
        let cf = self.cf(CF_LOG)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_last();
        it.status().map_err(read_err)?;
        let disk_last = match it.value() {
            None => None,
            Some(v) => {
                let e: Entry = bincode::deserialize(v).map_err(read_err)?;
                Some(e.log_id)
            }
        };
        Ok(match (memory_last, disk_last) {
            (Some(p), Some(d)) => Some(if p.index >= d.index { p } else { d }),
            (p, d) => p.or(d),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        // Memory first, then disk: an entry leaves memory only once it is on disk, so an
        // entry appended (even if not yet durable) is always found; and when memory
        // holds the range's start, it holds the rest (it is the log's end).
        let in_memory: Vec<Entry> = {
            let recent = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entries) = recent.read(start, &range) {
                return Ok(entries);
            }
            recent.within(start, &range)
        };
        let cf = self.cf(CF_LOG)?;
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(be(start));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let idx = u64::from_be_bytes(
                k.try_into()
                    .map_err(|_| read_err(std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&idx) {
                break;
            }
            out.insert(idx, bincode::deserialize(v).map_err(read_err)?);
            it.next();
        }
        it.status().map_err(read_err)?;
        for e in in_memory {
            out.insert(e.log_id.index, e);
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta("purged")?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta("vote", vote).await.map_err(|e| {
            io_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Queued without waiting: it is an optimisation (replay on restart), not a promise.
        let b = bincode::serialize(&committed).map_err(write_err)?;
        self.submit(Job::Change {
            change: Change::Committed(b),
            reply: None,
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        let mut ids = Vec::new();
        {
            let mut p = self.newest.lock().unwrap_or_else(|p| p.into_inner());
            for e in entries {
                let bytes = bincode::serialize(&e).map_err(write_err)?;
                let id = e.log_id;
                p.insert(e, bytes.len());
                encoded.push((id.index, bytes));
                ids.push(id);
            }
        }
        self.submit(Job::Append {
            entries: encoded,
            ids,
            done: callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cut_from(log_id.index);
        self.change(Change::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purged = bincode::serialize(&log_id).map_err(write_err)?;
        self.newest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cut_upto(log_id.index);
        self.change(Change::Purge {
            upto: log_id.index,
            purged,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn memory_answers_only_a_range_that_starts_within_it() {
        let mut r = Recent::default();
        for i in 10..15 {
            r.insert(entry(1, i), 100);
        }
        assert_eq!(
            indexes(&r.read(12, &(12..14)).unwrap_or_default()),
            [(1, 12), (1, 13)]
        );
        assert_eq!(r.read(14, &(14..)).map(|e| e.len()), Some(1));
        // Before the first entry kept: the disk has to be read too.
        assert!(r.read(9, &(9..12)).is_none());
        assert_eq!(r.within(9, &(9..12)).len(), 2);
    }

    #[test]
    fn only_durable_entries_leave_memory_and_the_oldest_first() {
        let mut r = Recent::default();
        let ids: Vec<LogId> = (1..=RECENT_ENTRIES as u64 + 10)
            .map(|i| {
                r.insert(entry(1, i), 10);
                entry(1, i).log_id
            })
            .collect();
        // Nothing written yet: everything stays, over the bound.
        r.written(&[]);
        assert_eq!(r.entries.len(), RECENT_ENTRIES + 10);
        // The first 5 written: only they may go.
        r.written(&ids[..5]);
        assert_eq!(r.entries.keys().next(), Some(&6));
        r.written(&ids);
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(r.entries.keys().next(), Some(&11));
        assert_eq!(r.bytes, RECENT_ENTRIES * 10);
    }

    #[test]
    fn an_entry_replaced_after_a_truncation_is_not_taken_as_written() {
        let mut r = Recent::default();
        let old = entry(1, 5);
        r.insert(entry(1, 4), 10);
        r.insert(old.clone(), 10);
        r.cut_from(5);
        assert_eq!(r.bytes, 10);
        r.insert(entry(2, 5), 30);
        r.written(&[old.log_id]);
        assert!(
            !r.entries[&5].durable,
            "the new entry at 5 is not on disk yet"
        );
        assert_eq!(
            indexes(&r.read(4, &(4..)).unwrap_or_default()),
            [(1, 4), (2, 5)]
        );
        assert_eq!(r.bytes, 40);
    }

    #[test]
    fn a_purge_drops_what_it_purges_and_the_bytes_follow_the_bound() {
        let mut r = Recent::default();
        for i in 1..=4 {
            r.insert(entry(1, i), RECENT_BYTES / 3);
        }
        r.cut_upto(1);
        assert_eq!(r.entries.keys().next(), Some(&2));
        let ids: Vec<LogId> = (2..=4).map(|i| entry(1, i).log_id).collect();
        r.written(&ids);
        // Three thirds are the whole budget: nothing above it, nothing dropped.
        assert_eq!(r.entries.len(), 3);
        r.insert(entry(1, 5), 10);
        r.written(&[entry(1, 5).log_id]);
        assert_eq!(r.entries.keys().next(), Some(&3));
    }
}
