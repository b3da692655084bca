//! The replicated key-value state machine on RocksDB ([`RaftStateMachine`]).
//!
//! The current key space is also held in memory (as etcd holds its index), so reads are
//! served without touching disk; RocksDB holds it durably together with the event history.
//! Each `apply` call writes its changes and the last applied log id in one `WriteBatch`:
//! a crash never applies an entry twice or loses one. The batch skips RocksDB's WAL: the
//! Raft log, synced before an entry commits, is this state's write-ahead log (as etcd's
//! WAL is for its bbolt backend). A crash loses the applies still in memtables, the
//! applied index among them, and the entries are applied again from the log on restart;
//! flushes write every column family at once (`db::open`), so what survives is always one
//! apply's state. Before a snapshot lets the log behind it be purged, the memtables are
//! flushed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::command::{Event, EventKind, KeyRange, KeyValue, RangeReq, RangeResult, Response};
use crate::db::{be, hist_key, parse_hist_key, CF_HIST, CF_KV, CF_LEASE, CF_SM};
use crate::log_store::blocking;
use crate::mvcc::{Changes, History, LeaseState, Mvcc, ReadError};
use crate::types::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::types::TypeConfig;

/// Capacity of the watch fan-out; a watcher that falls further behind catches up from disk.
const HUB_CAPACITY: usize = 1024;

/// What the state machine tells watchers.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    /// Events just applied, oldest first (their revision is `kv.mod_revision`).
    Events(Arc<Vec<Event>>),
    /// The state was replaced by a snapshot: re-read history from disk.
    Reset,
}

struct Inner {
    mvcc: Mvcc,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// State shared between the state machine (owned by openraft) and the read paths.
pub struct Shared {
    db: Arc<DB>,
    dir: PathBuf,
    inner: RwLock<Inner>,
    hub: broadcast::Sender<WatchMsg>,
    snapshot_file: std::sync::Mutex<()>,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots for openraft.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: i64,
    compact_revision: i64,
    kvs: Vec<KeyValue>,
    leases: Vec<(i64, i64)>,
    /// History records as stored (see [`crate::hist`]).
    hist: Vec<(i64, u32, crate::hist::Record)>,
}

/// Writes a [`SnapshotBody`] byte for byte as `bincode::serialize` does (fields in order,
/// little-endian fixed-width integers, a `u64` length before each sequence), but takes
/// each key record and event as the bytes RocksDB already holds — bincode of the same
/// types — so a snapshot copies the history instead of decoding and re-encoding it.
/// `install_snapshot` reads it with plain `bincode::deserialize`.
struct BodyEncoder {
    out: Vec<u8>,
    /// Where the length of the sequence being written goes, and its count so far.
    len_at: usize,
    count: u64,
}

impl BodyEncoder {
    /// Starts with the fields before `kvs` (taken from `head`; its sequences are ignored).
    fn new(head: &SnapshotBody) -> std::io::Result<Self> {
        let mut out = Vec::new();
        let mut put = |v: &dyn erased::Ser| -> std::io::Result<()> {
            out.extend_from_slice(&v.bytes()?);
            Ok(())
        };
        put(&head.last_applied)?;
        put(&head.membership)?;
        put(&head.revision)?;
        put(&head.compact_revision)?;
        let mut enc = BodyEncoder {
            out,
            len_at: 0,
            count: 0,
        };
        enc.open_sequence();
        Ok(enc)
    }

    fn open_sequence(&mut self) {
        self.len_at = self.out.len();
        self.count = 0;
        self.out.extend_from_slice(&0u64.to_le_bytes());
    }

    fn close_sequence(&mut self) {
        self.out[self.len_at..self.len_at + 8].copy_from_slice(&self.count.to_le_bytes());
    }

    /// One key record, as stored (bincode of a [`KeyValue`]).
    fn kv(&mut self, raw: &[u8]) {
        self.out.extend_from_slice(raw);
        self.count += 1;
    }

    /// Ends the key records, writes the leases and starts the history.
    fn start_history(&mut self, leases: &[(i64, i64)]) -> std::io::Result<()> {
        self.close_sequence();
        self.out.extend_from_slice(&erased::Ser::bytes(&leases)?);
        self.open_sequence();
        Ok(())
    }

    /// One history record, as stored (see [`crate::hist`]).
    fn event(&mut self, rev: i64, sub: u32, raw: &[u8]) {
        self.out.extend_from_slice(&rev.to_le_bytes());
        self.out.extend_from_slice(&sub.to_le_bytes());
        self.out.extend_from_slice(raw);
        self.count += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_sequence();
        self.out
    }
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

struct DbHistory<'a> {
    db: &'a DB,
    pending: &'a [(u32, Event)],
}

impl History for DbHistory<'_> {
    fn events_after(&self, rev: i64) -> std::io::Result<Vec<Event>> {
        let mut out = read_hist(self.db, rev + 1, usize::MAX)?;
        out.extend(
            self.pending
                .iter()
                .filter(|(_, e)| e.kv.mod_revision > rev)
                .map(|(_, e)| e.clone()),
        );
        Ok(out)
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> std::io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| std::io::Error::other(format!("column family {name} missing")))
}

/// Events from revision `from` on: at most `max`, except that a revision is never split.
fn read_hist(db: &DB, from: i64, max: usize) -> std::io::Result<Vec<Event>> {
    let cf = cf(db, CF_HIST)?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek(hist_key(from.max(0), 0));
    let mut out: Vec<Event> = Vec::new();
    while let Some(v) = it.value() {
        let ev = crate::hist::decode(v)?;
        if out.len() >= max
            && out
                .last()
                .is_some_and(|l| l.kv.mod_revision != ev.kv.mod_revision)
        {
            break;
        }
        out.push(ev);
        it.next();
    }
    it.status().map_err(std::io::Error::other)?;
    Ok(out)
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &str) -> std::io::Result<Option<T>> {
    decode_meta(
        db.get_cf(cf(db, CF_SM)?, key)
            .map_err(std::io::Error::other)?,
    )
}

/// A state machine meta value from its stored bytes, if any.
fn decode_meta<T: serde::de::DeserializeOwned>(b: Option<Vec<u8>>) -> std::io::Result<Option<T>> {
    b.map(|b| bincode::deserialize(&b))
        .transpose()
        .map_err(std::io::Error::other)
}

/// Every lease (id, TTL) an iterator over the `lease` column family holds.
fn read_leases(
    mut it: rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
) -> std::io::Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let id: [u8; 8] = k
            .try_into()
            .map_err(|_| std::io::Error::other(format!("lease key of {} bytes", k.len())))?;
        let ttl: i64 = bincode::deserialize(v).map_err(std::io::Error::other)?;
        out.push((u64::from_be_bytes(id) as i64, ttl));
        it.next();
    }
    it.status().map_err(std::io::Error::other)?;
    Ok(out)
}

fn clear_cf(db: &DB, batch: &mut WriteBatch, name: &str) -> std::io::Result<()> {
    let cf = cf(db, name)?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    let first = it.key().map(<[u8]>::to_vec);
    it.seek_to_last();
    let last = it.key().map(<[u8]>::to_vec);
    it.status().map_err(std::io::Error::other)?;
    if let (Some(f), Some(l)) = (first, last) {
        batch.delete_range_cf(cf, f, l.clone());
        batch.delete_cf(cf, l);
    }
    Ok(())
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A poisoned lock means a panic mid-apply. Refused commands roll back their memory
        // changes, and persistence happens after the in-memory apply, so keep serving.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves a range read from this server's state.
    ///
    /// # Errors
    /// Compacted or future revision; history read failures.
    pub fn range(&self, req: &RangeReq) -> Result<(RangeResult, i64), ReadError> {
        let inner = self.read();
        let hist = DbHistory {
            db: &self.db,
            pending: &[],
        };
        let r = inner.mvcc.range(req, &hist)?;
        Ok((r, inner.mvcc.revision))
    }

    /// Current revision.
    pub fn revision(&self) -> i64 {
        self.read().mvcc.revision
    }

    /// Revision below which history is gone.
    pub fn compact_revision(&self) -> i64 {
        self.read().mvcc.compact_revision
    }

    /// Last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.read().last_applied
    }

    /// The membership as of the last applied entry.
    pub fn membership(&self) -> StoredMembership {
        self.read().membership.clone()
    }

    /// Leases: (id, granted ttl).
    pub fn leases(&self) -> Vec<(i64, i64)> {
        self.read()
            .mvcc
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl))
            .collect()
    }

    /// One lease: granted ttl and attached keys.
    pub fn lease(&self, id: i64) -> Option<(i64, Vec<Vec<u8>>)> {
        self.read()
            .mvcc
            .leases
            .get(&id)
            .map(|l| (l.ttl, l.keys.iter().cloned().collect()))
    }

    /// Subscribes to applied events. Subscribe first, then read history: nothing falls in
    /// between.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchMsg> {
        self.hub.subscribe()
    }

    /// Events from revision `from` on in `range`: a page of about `max` events read from
    /// disk. Returns the matching events, the revision to continue from, and whether the
    /// history is exhausted (then the continuation is the current revision + 1).
    ///
    /// # Errors
    /// [`ReadError::Refused`] with `Compacted` when `from` is below the compact revision.
    pub fn history(
        &self,
        from: i64,
        range: &KeyRange,
        max: usize,
    ) -> Result<(Vec<Event>, i64, bool), ReadError> {
        let inner = self.read();
        if from < inner.mvcc.compact_revision {
            return Err(crate::command::ApplyError::Compacted.into());
        }
        let raw = read_hist(&self.db, from, max)?;
        let done = raw.len() < max;
        let next = if done {
            inner.mvcc.revision + 1
        } else {
            raw.last().map_or(from, |e| e.kv.mod_revision + 1)
        };
        Ok((
            raw.into_iter()
                .filter(|e| range.contains(&e.kv.key))
                .collect(),
            next.max(from),
            done,
        ))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot.bin")
    }

    /// Builds a snapshot of the current state: (meta, bytes).
    fn build(&self, save: bool) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
        let read = |e: std::io::Error| snap_err(ErrorVerb::Read, e);
        // Under the lock only long enough to pin a RocksDB snapshot: every apply writes
        // memory and RocksDB under the write lock, so the pinned view holds whole applies.
        // Everything, metadata included, is then read from that view (never from memory,
        // which a failed apply could leave ahead of the disk), while applies go on.
        let view = {
            let _inner = self.read();
            self.db.snapshot()
        };
        let (last_applied, membership, revision, compact_revision, leases) =
            (|| -> std::io::Result<_> {
                let sm = cf(&self.db, CF_SM)?;
                let meta = |key: &str| view.get_cf(sm, key).map_err(std::io::Error::other);
                Ok((
                    decode_meta::<Option<LogId>>(meta("applied")?)?.flatten(),
                    decode_meta::<StoredMembership>(meta("membership")?)?.unwrap_or_default(),
                    decode_meta::<i64>(meta("revision")?)?.unwrap_or(0),
                    decode_meta::<i64>(meta("compact")?)?.unwrap_or(0),
                    read_leases(view.raw_iterator_cf(cf(&self.db, CF_LEASE)?))?,
                ))
            })()
            .map_err(read)?;
        let id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, revision),
            None => format!("0-0-{}", revision),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership.clone(),
            snapshot_id: id,
        };
        let body = SnapshotBody {
            last_applied,
            membership,
            revision,
            compact_revision,
            kvs: Vec::new(),
            leases,
            hist: Vec::new(),
        };
        // The state we snapshot must be durable before openraft purges the log behind it:
        // applies skip the WAL, so their memtables are flushed (atomically, with the
        // applied index) to SST files.
        blocking(|| flush_state(&self.db)).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let mut enc = BodyEncoder::new(&body).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        {
            let mut it = view.raw_iterator_cf(cf(&self.db, CF_KV).map_err(read)?);
            it.seek_to_first();
            while let Some(v) = it.value() {
                enc.kv(v);
                it.next();
            }
            it.status().map_err(|e| snap_err(ErrorVerb::Read, e))?;
        }
        enc.start_history(&body.leases)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        {
            let mut it = view.raw_iterator_cf(cf(&self.db, CF_HIST).map_err(read)?);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let (rev, sub) = parse_hist_key(k).ok_or_else(|| {
                    snap_err(
                        ErrorVerb::Read,
                        format!("history key of {} bytes (want 12)", k.len()),
                    )
                })?;
                enc.event(rev, sub, v);
                it.next();
            }
            it.status().map_err(|e| snap_err(ErrorVerb::Read, e))?;
        }
        drop(view);
        let data = enc.finish();
        if save {
            self.save_snapshot(&meta, &data)?;
        }
        Ok((meta, data))
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        // Builds and installs may overlap: one writer of snapshot.bin at a time.
        let _guard = self.snapshot_file.lock().unwrap_or_else(|p| p.into_inner());
        let file = bincode::serialize(&(meta, data)).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let tmp = self.dir.join("snapshot.bin.tmp");
        let path = self.snapshot_path();
        blocking(|| -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&file)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })
        .map_err(|e| snap_err(ErrorVerb::Write, e))
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let path = self.snapshot_path();
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let (meta, data): (SnapshotMeta, Vec<u8>) = bincode::deserialize(&bytes)
            .map_err(|e| snap_err(ErrorVerb::Read, format!("{}: {e}", path.display())))?;
        Ok(Some((meta, data)))
    }

    /// The last snapshot's bytes (for `Maintenance.Snapshot`), building one if none exists.
    ///
    /// # Errors
    /// When the snapshot cannot be built or read.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, StorageError> {
        // Not saved: only openraft's own builds and installs replace snapshot.bin.
        Ok(self.build(false)?.1)
    }
}

impl StateMachine {
    /// Loads the state machine from `db`; `dir` is the data directory (snapshot file).
    ///
    /// # Errors
    /// When stored state cannot be decoded.
    pub fn open(db: Arc<DB>, dir: &Path) -> std::io::Result<Self> {
        let last_applied: Option<LogId> = get_meta::<Option<LogId>>(&db, "applied")?.flatten();
        let membership: StoredMembership = get_meta(&db, "membership")?.unwrap_or_default();
        let revision: i64 = get_meta(&db, "revision")?.unwrap_or(0);
        let compact_revision: i64 = get_meta(&db, "compact")?.unwrap_or(0);
        let mut kvs = BTreeMap::new();
        let mut leases: BTreeMap<i64, LeaseState> =
            read_leases(db.raw_iterator_cf(cf(&db, CF_LEASE)?))?
                .into_iter()
                .map(|(id, ttl)| {
                    (
                        id,
                        LeaseState {
                            ttl,
                            keys: BTreeSet::new(),
                        },
                    )
                })
                .collect();
        {
            let mut it = db.raw_iterator_cf(cf(&db, CF_KV)?);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let kv: KeyValue = bincode::deserialize(v).map_err(std::io::Error::other)?;
                if kv.lease != 0 {
                    if let Some(l) = leases.get_mut(&kv.lease) {
                        l.keys.insert(k.to_vec());
                    }
                }
                kvs.insert(k.to_vec(), kv);
                it.next();
            }
            it.status().map_err(std::io::Error::other)?;
        }
        let (hub, _) = broadcast::channel(HUB_CAPACITY);
        let inner = Inner {
            mvcc: Mvcc {
                kvs,
                revision,
                compact_revision,
                leases,
            },
            last_applied,
            membership,
        };
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                dir: dir.to_path_buf(),
                inner: RwLock::new(inner),
                snapshot_file: std::sync::Mutex::new(()),
                hub,
            }),
        })
    }

    /// The handle read paths use.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

fn persist(
    db: &DB,
    batch: &mut WriteBatch,
    changes: &Changes,
    inner: &Inner,
) -> std::io::Result<()> {
    let (kv, hist, lease, sm) = (
        cf(db, CF_KV)?,
        cf(db, CF_HIST)?,
        cf(db, CF_LEASE)?,
        cf(db, CF_SM)?,
    );
    let ser = |v: &dyn erased::Ser| v.bytes();
    for (sub, ev) in &changes.events {
        match ev.kind {
            EventKind::Put => batch.put_cf(kv, &ev.kv.key, ser(&ev.kv)?),
            EventKind::Delete => batch.delete_cf(kv, &ev.kv.key),
        }
        batch.put_cf(
            hist,
            hist_key(ev.kv.mod_revision, *sub),
            crate::hist::encode(ev)?,
        );
    }
    // Leases by their final state: a revoke and a re-grant of one id in the same apply
    // must leave what memory holds.
    let touched: std::collections::BTreeSet<i64> = changes
        .leases_granted
        .iter()
        .map(|(id, _)| *id)
        .chain(changes.leases_revoked.iter().copied())
        .collect();
    for id in touched {
        match inner.mvcc.leases.get(&id) {
            Some(l) => batch.put_cf(lease, be(id as u64), ser(&l.ttl)?),
            None => batch.delete_cf(lease, be(id as u64)),
        }
    }
    if let Some(c) = changes.compacted_to {
        batch.delete_range_cf(hist, hist_key(0, 0), hist_key(c, 0));
    }
    batch.put_cf(sm, "applied", ser(&inner.last_applied)?);
    batch.put_cf(sm, "membership", ser(&inner.membership)?);
    batch.put_cf(sm, "revision", ser(&inner.mvcc.revision)?);
    batch.put_cf(sm, "compact", ser(&inner.mvcc.compact_revision)?);
    Ok(())
}

/// Options of an apply's write: no WAL, since the Raft log replays it after a crash.
fn no_wal() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

/// Writes the state machine's memtables to SST files and waits: afterwards the applied
/// state survives a crash without the log entries behind it.
fn flush_state(db: &DB) -> std::io::Result<()> {
    let cfs = [CF_KV, CF_HIST, CF_LEASE, CF_SM]
        .into_iter()
        .map(|n| cf(db, n))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut opts = rocksdb::FlushOptions::default();
    opts.set_wait(true);
    db.flush_cfs_opt(&cfs, &opts).map_err(std::io::Error::other)
}

/// Tiny object-safe serialisation helper so `persist` can take mixed types.
mod erased {
    pub trait Ser {
        fn bytes(&self) -> std::io::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> std::io::Result<Vec<u8>> {
            bincode::serialize(self).map_err(std::io::Error::other)
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        // Seconds of reading, encoding and an fsync of the whole state: on a blocking
        // thread, not on one of the runtime's few workers (openraft runs this future as a
        // task of its own), which would stall every task queued behind it meanwhile.
        let shared = self.shared.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || shared.build(true))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, format!("snapshot build: {e}")))??;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), took_ms = started.elapsed().as_millis() as u64, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = self.shared.read();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let sh = &self.shared;
        let mut changes = Changes::default();
        let mut out = Vec::new();
        {
            let mut inner = sh.write();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                let result = match e.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Normal(req) => {
                        let pending = std::mem::take(&mut changes.events);
                        let r = {
                            let hist = DbHistory {
                                db: &sh.db,
                                pending: &pending,
                            };
                            let mut local = Changes::default();
                            let r = inner
                                .mvcc
                                .apply(&req, e.log_id.leader_id.term, &hist, &mut local)
                                .map_err(|e| sm_err(ErrorVerb::Read, format!("history: {e}")))?;
                            changes.leases_granted.extend(local.leases_granted);
                            changes.leases_revoked.extend(local.leases_revoked);
                            if local.compacted_to.is_some() {
                                changes.compacted_to = local.compacted_to;
                            }
                            (r, local.events)
                        };
                        changes.events = pending;
                        changes.events.extend(r.1);
                        Some(r.0)
                    }
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(e.log_id), m);
                        None
                    }
                };
                out.push(Response {
                    revision: inner.mvcc.revision,
                    result,
                });
            }
            let mut batch = WriteBatch::default();
            persist(&sh.db, &mut batch, &changes, &inner)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            // A memtable insert of microseconds, without the WAL (the module's doc):
            // handing the worker thread off (block_in_place) would cost more than the write.
            sh.db
                .write_opt(batch, &no_wal())
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        if !changes.events.is_empty() {
            let events: Vec<Event> = changes.events.into_iter().map(|(_, e)| e).collect();
            // No receivers is fine: nobody watches.
            let _ = sh.hub.send(WatchMsg::Events(Arc::new(events)));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody =
            bincode::deserialize(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let sh = &self.shared;
        {
            let mut inner = sh.write();
            let db = &sh.db;
            let mut batch = WriteBatch::default();
            let io = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
            for name in [CF_KV, CF_HIST, CF_LEASE, CF_SM] {
                clear_cf(db, &mut batch, name).map_err(io)?;
            }
            let mut kvs = BTreeMap::new();
            let mut leases: BTreeMap<i64, LeaseState> = body
                .leases
                .iter()
                .map(|(i, t)| {
                    (
                        *i,
                        LeaseState {
                            ttl: *t,
                            keys: BTreeSet::new(),
                        },
                    )
                })
                .collect();
            let (kv_cf, hist_cf, lease_cf) = (
                cf(db, CF_KV).map_err(io)?,
                cf(db, CF_HIST).map_err(io)?,
                cf(db, CF_LEASE).map_err(io)?,
            );
            for kv in body.kvs {
                batch.put_cf(
                    kv_cf,
                    &kv.key,
                    bincode::serialize(&kv).map_err(|e| snap_err(ErrorVerb::Write, e))?,
                );
                if let Some(l) = leases.get_mut(&kv.lease) {
                    l.keys.insert(kv.key.clone());
                }
                kvs.insert(kv.key.clone(), kv);
            }
            for (rev, sub, ev) in &body.hist {
                batch.put_cf(
                    hist_cf,
                    hist_key(*rev, *sub),
                    bincode::serialize(ev).map_err(|e| snap_err(ErrorVerb::Write, e))?,
                );
            }
            for (id, ttl) in &body.leases {
                batch.put_cf(
                    lease_cf,
                    be(*id as u64),
                    bincode::serialize(ttl).map_err(|e| snap_err(ErrorVerb::Write, e))?,
                );
            }
            let new = Inner {
                mvcc: Mvcc {
                    kvs,
                    revision: body.revision,
                    compact_revision: body.compact_revision,
                    leases,
                },
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            persist(db, &mut batch, &Changes::default(), &new).map_err(io)?;
            let mut w = WriteOptions::default();
            w.set_sync(true);
            blocking(|| db.write_opt(batch, &w)).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            *inner = new;
        }
        sh.save_snapshot(meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        let _ = sh.hub.send(WatchMsg::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.shared.load_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::typ::LogId;

    fn kv(key: &str, rev: i64, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
            value: value.as_bytes().to_vec(),
            lease: 0,
        }
    }

    #[test]
    fn the_snapshot_encoder_writes_what_bincode_writes() {
        let body = SnapshotBody {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
            membership: StoredMembership::default(),
            revision: 7,
            compact_revision: 2,
            kvs: vec![kv("/a", 5, "x"), kv("/b", 7, "yy")],
            leases: vec![(9, 30), (10, 60)],
            hist: vec![
                (
                    5,
                    0,
                    crate::hist::record(&Event {
                        kind: EventKind::Put,
                        kv: kv("/a", 5, "x"),
                        prev: Some(kv("/a", 4, "old")),
                    }),
                ),
                (
                    7,
                    1,
                    crate::hist::record(&Event {
                        kind: EventKind::Delete,
                        kv: kv("/c", 7, ""),
                        prev: None,
                    }),
                ),
                (
                    8,
                    0,
                    crate::hist::record(&Event {
                        kind: EventKind::Put,
                        kv: kv("/a", 8, &format!("{}y", "x".repeat(200))),
                        prev: Some(kv("/a", 5, &"x".repeat(200))),
                    }),
                ),
            ],
        };
        let ser = |v: &dyn erased::Ser| v.bytes().unwrap_or_default();
        let mut enc = BodyEncoder::new(&body).unwrap_or_else(|e| panic!("{e}"));
        for k in &body.kvs {
            enc.kv(&ser(k));
        }
        enc.start_history(&body.leases)
            .unwrap_or_else(|e| panic!("{e}"));
        for (rev, sub, ev) in &body.hist {
            enc.event(*rev, *sub, &ser(ev));
        }
        let ours = enc.finish();
        let theirs = bincode::serialize(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours, theirs);
        let back: SnapshotBody = bincode::deserialize(&ours).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.kvs, body.kvs);
        assert_eq!(back.hist.len(), 3);
        assert!(matches!(back.hist[2].2, crate::hist::Record::Update { .. }));
        assert_eq!(back.hist, body.hist);
    }
}
