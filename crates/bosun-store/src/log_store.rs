//! The Raft log and vote in RocksDB ([`openraft::storage::RaftLogStorage`]).
//!
//! Appends are written with `sync = true` before openraft is told the IO completed, so an
//! acknowledged entry survives a power cut. (openraft's own RocksDB example skips this.)

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::db::{be, CF_LOG, CF_RAFT};
use crate::types::typ::{Entry, LogId, StorageError, Vote};
use crate::types::TypeConfig;

/// The log store. Cheap to clone: readers share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
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

impl LogStore {
    /// A log store on `db`.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
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

    fn put_meta<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StorageError> {
        let cf = self.cf(CF_RAFT)?;
        let b = bincode::serialize(v).map_err(write_err)?;
        blocking(|| self.db.put_cf_opt(cf, key, b, &synced())).map_err(write_err)
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = self.cf(CF_LOG)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_last();
        it.status().map_err(read_err)?;
        match it.value() {
            None => Ok(None),
            Some(v) => {
                let e: Entry = bincode::deserialize(v).map_err(read_err)?;
                Ok(Some(e.log_id))
            }
        }
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
        let cf = self.cf(CF_LOG)?;
        let mut out = Vec::new();
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
            out.push(bincode::deserialize(v).map_err(read_err)?);
            it.next();
        }
        it.status().map_err(read_err)?;
        Ok(out)
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
        self.put_meta("vote", vote).map_err(|e| {
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
        // Not synced on its own: it is an optimisation (replay on restart), not a promise.
        let cf = self.cf(CF_RAFT)?;
        let b = bincode::serialize(&committed).map_err(write_err)?;
        self.db.put_cf(cf, "committed", b).map_err(write_err)
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
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        for e in entries {
            batch.put_cf(
                cf,
                be(e.log_id.index),
                bincode::serialize(&e).map_err(write_err)?,
            );
        }
        let res = blocking(|| self.db.write_opt(batch, &synced()));
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, be(log_id.index), be(u64::MAX));
        blocking(|| self.db.write_opt(batch, &synced())).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: if we crash in between, the log merely keeps a few
        // entries too many.
        self.put_meta("purged", &log_id)?;
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, be(0), be(log_id.index + 1));
        self.db.write(batch).map_err(write_err)
    }
}
