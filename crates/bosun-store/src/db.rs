//! The one RocksDB instance of a server and its column families.
//!
//! | column family | key                     | value                                 |
//! |---------------|-------------------------|---------------------------------------|
//! | `log`         | index (u64 BE)          | Raft entry                            |
//! | `raft`        | `vote`, `committed`, `purged` | Raft hard state                 |
//! | `kv`          | user key                | current record                        |
//! | `hist`        | revision (u64 BE) ++ sub (u32 BE) | event (with previous record) |
//! | `lease`       | lease id (u64 BE)       | TTL                                   |
//! | `sm`          | `applied`, `membership`, `revision`, `compact` | state machine meta |

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Options, DB};

use crate::{Error, Result};

/// Column family names.
pub const CF_LOG: &str = "log";
/// Raft hard state.
pub const CF_RAFT: &str = "raft";
/// Current key records.
pub const CF_KV: &str = "kv";
/// Event history by revision.
pub const CF_HIST: &str = "hist";
/// Leases.
pub const CF_LEASE: &str = "lease";
/// State machine metadata.
pub const CF_SM: &str = "sm";

const ALL_CFS: [&str; 6] = [CF_LOG, CF_RAFT, CF_KV, CF_HIST, CF_LEASE, CF_SM];

/// WAL files kept at most, in bytes (see [`open`]).
pub const MAX_TOTAL_WAL_BYTES: u64 = 256 << 20;
/// The memory all column families' memtables may use together.
pub const MAX_MEMTABLE_BYTES: usize = 128 << 20;

/// Opens (or creates) the server's database under `dir/db`.
///
/// # Errors
/// [`Error::Open`] with RocksDB's reason when the directory is unusable or corrupted; the
/// database is never silently recreated over existing files.
pub fn open(dir: &Path) -> Result<Arc<DB>> {
    let path = dir.join("db");
    if let Some(missing) = missing_cpu_features() {
        return Err(Error::Open {
            path,
            reason: format!(
                "this CPU lacks {missing}, which the store's checksums are built to use (every x86-64 server CPU since 2011 has them)"
            ),
        });
    }
    let exists = path.join("CURRENT").exists();
    if !exists
        && path.exists()
        && std::fs::read_dir(&path)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Error::Open {
            path: path.clone(),
            reason: "directory is not empty but holds no database (CURRENT missing): refusing to create a new one over it".into(),
        });
    }
    let mut opts = Options::default();
    opts.create_if_missing(!exists);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    // RocksDB keeps every WAL file until each column family has flushed what it wrote
    // there; the small ones (`raft`, `sm`, `lease`) fill a memtable rarely, so by default
    // the WAL grew to four times all write buffers (3 GiB here) before they were flushed:
    // that much disk, and that much to replay on restart. Past this size RocksDB flushes
    // the column families that hold the oldest WAL file back.
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    // Each column family may otherwise hold two 64 MiB memtables: 768 MiB of memory for
    // the six of them. Past this total RocksDB flushes the largest.
    opts.set_db_write_buffer_size(MAX_MEMTABLE_BYTES);
    opts.set_paranoid_checks(true);
    // Flushes and compactions write their files around the page cache. Copying each new
    // table file into the page cache (and the kernel writing it back later) was most of
    // a flush's CPU; the tables just written are cold (the Raft log behind the applied
    // index, old history, and records the memtables no longer hold), and what is read
    // back goes through RocksDB's block cache. On the scheduling bench, a cluster's later
    // runs, where flushes fall inside the run, lost a tenth of their throughput without
    // this (docs/benchmarks.md, session eleven). Only where the file system takes
    // O_DIRECT: tmpfs before Linux 6.6 refuses it, and a flush that cannot open its file
    // would stop every write.
    // Probed where RocksDB writes: `db` may be another file system (a mount, a link).
    // Created empty if new, which the check above accepts on the next start.
    if std::fs::create_dir_all(&path).is_ok() && direct_io_works(&path) {
        opts.set_use_direct_io_for_flush_and_compaction(true);
    } else {
        tracing::info!(dir = %path.display(), "the file system refuses direct I/O: flushes and compactions write through the page cache");
    }
    // The state machine writes its column families without the WAL (state_machine.rs:
    // the Raft log is their WAL). A flush must then write every column family at once,
    // or a restart could find `kv` ahead of the applied index kept in `sm` and apply
    // entries twice.
    opts.set_atomic_flush(true);
    // Compactions run at the lowest CPU priority (nice 19): they can wait for an idle
    // moment, while Raft, applying entries and serving requests cannot. Flushes keep
    // normal priority, since a flush that falls behind stalls writes at once; compactions
    // that fall far behind slow writes down through RocksDB's level-0 triggers.
    if let Ok(mut env) = rocksdb::Env::new() {
        env.lower_thread_pool_cpu_priority();
        opts.set_env(&env);
    }
    let cfs = ALL_CFS.iter().map(|n| {
        let mut cf = Options::default();
        if *n == CF_KV {
            // Creating an object first looks its key up (on the API server, and again when
            // each server applies the write), and the key is new: without a filter, each
            // such lookup searches every SST file that could hold it, and their number
            // grows with every deleted object not yet compacted away. A bloom filter
            // (10 bits a key, ~1 % false positives) answers "absent" from memory.
            let mut table = BlockBasedOptions::default();
            table.set_bloom_filter(10.0, false);
            cf.set_block_based_table_factory(&table);
        }
        ColumnFamilyDescriptor::new(*n, cf)
    });
    DB::open_cf_descriptors(&opts, &path, cfs)
        .map(Arc::new)
        .map_err(|e| Error::Open {
            path,
            reason: e.into_string(),
        })
}

/// Whether a file in `dir` can be opened and written with `O_DIRECT` (an aligned block),
/// as RocksDB's flushes and compactions then write theirs. Leaves no file behind.
fn direct_io_works(dir: &Path) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const BLOCK: usize = 4096;
    let probe = dir.join(".direct-io-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .and_then(|mut f| {
            // Direct writes need a buffer aligned to the device's blocks: a 4 KiB-aligned
            // slice of a larger one.
            let buf = vec![0u8; 2 * BLOCK];
            let at = buf.as_ptr().align_offset(BLOCK);
            match at.checked_add(BLOCK).and_then(|end| buf.get(at..end)) {
                Some(block) => f.write_all(block),
                None => Err(std::io::Error::other("no aligned block")),
            }
        });
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

/// The CPU features RocksDB is built to use (`.cargo/config.toml`: SSE4.2 and PCLMULQDQ
/// for CRC32C) that this CPU lacks, if any: without them its first checksum would stop the
/// process on an illegal instruction.
fn missing_cpu_features() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let missing: Vec<&str> = [
            ("SSE4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            (
                "PCLMULQDQ",
                std::arch::is_x86_feature_detected!("pclmulqdq"),
            ),
        ]
        .into_iter()
        .filter(|(_, has)| !has)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Some(missing.join(" and "));
        }
    }
    None
}

/// Big-endian u64 key.
pub fn be(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// History key of one event.
pub fn hist_key(rev: i64, sub: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(rev as u64).to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// The (revision, sub) a history key names; `None` if it is not 12 bytes.
pub fn parse_hist_key(k: &[u8]) -> Option<(i64, u32)> {
    let k: [u8; 12] = k.try_into().ok()?;
    let (rev, sub) = k.split_at(8);
    Some((
        u64::from_be_bytes(rev.try_into().ok()?) as i64,
        u32::from_be_bytes(sub.try_into().ok()?),
    ))
}

/// Size on disk of the database directory (for Status).
pub fn size_on_disk(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.filter_map(|e| e.ok())
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&dir.join("db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `measure` until it is at most `limit` or 30 s have passed; the last reading.
    fn settle(limit: u64, measure: impl Fn() -> u64) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut now = measure();
        while now > limit && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            now = measure();
        }
        now
    }

    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("db"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// A column family written once must not keep every later WAL file alive: past
    /// MAX_TOTAL_WAL_BYTES RocksDB flushes it and the old files go.
    #[test]
    fn wal_files_stay_bounded_when_a_small_column_family_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let raft = db.cf_handle(CF_RAFT).unwrap();
        let kv = db.cf_handle(CF_KV).unwrap();
        db.put_cf(&raft, b"vote", b"1").unwrap();
        let value = vec![7u8; 1 << 20];
        let total = MAX_TOTAL_WAL_BYTES * 2;
        for i in 0..total >> 20 {
            db.put_cf(&kv, i.to_be_bytes(), &value).unwrap();
        }
        // Obsolete WAL files are deleted after the flush, in the background.
        let wal = settle(MAX_TOTAL_WAL_BYTES, || wal_bytes(dir.path()));
        assert!(
            wal <= MAX_TOTAL_WAL_BYTES,
            "{wal} bytes of WAL after writing {total}: the idle column family pins them"
        );
        // Nothing written was lost to the flushes.
        assert_eq!(
            db.get_cf(&raft, b"vote").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(db.get_cf(&kv, 0u64.to_be_bytes()).unwrap(), Some(value));
    }

    #[test]
    fn direct_io_is_probed_where_the_data_lives_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // This machine's file system takes O_DIRECT exactly when a direct open does.
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("other"))
            .is_ok();
        std::fs::remove_file(dir.path().join("other")).ok();
        assert_eq!(direct_io_works(dir.path()), direct);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A directory that is not there takes nothing: the page cache, as before.
        assert!(!direct_io_works(&dir.path().join("missing")));
        // The database opens either way, and what it flushes reads back.
        let db = open(dir.path()).unwrap();
        let kv = db.cf_handle(CF_KV).unwrap();
        db.put_cf(&kv, b"k", b"v").unwrap();
        db.flush_cfs_opt(&[&kv], &rocksdb::FlushOptions::default())
            .unwrap();
        assert_eq!(db.get_cf(&kv, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    fn memtable_bytes(db: &DB) -> u64 {
        ALL_CFS
            .iter()
            .map(|n| {
                let cf = db.cf_handle(n).unwrap();
                db.property_int_value_cf(&cf, "rocksdb.cur-size-all-mem-tables")
                    .unwrap()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Column families that each stay under their own write buffer size must still not
    /// hold more memtable memory together than MAX_MEMTABLE_BYTES.
    #[test]
    fn memtables_stay_bounded_across_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        let value = vec![7u8; 1 << 20];
        let per_cf = 48u64; // MiB: below one 64 MiB memtable, 192 MiB over four
        for name in [CF_LOG, CF_RAFT, CF_KV, CF_HIST] {
            let cf = db.cf_handle(name).unwrap();
            for i in 0..per_cf {
                db.put_cf(&cf, i.to_be_bytes(), &value).unwrap();
            }
        }
        // Flushes run in the background; a flushed memtable is freed after them.
        let limit = MAX_MEMTABLE_BYTES as u64;
        let held = settle(limit, || memtable_bytes(&db));
        assert!(
            held <= limit,
            "{held} bytes in memtables after writing {} MiB to four column families",
            per_cf * 4
        );
        let kv = db.cf_handle(CF_KV).unwrap();
        assert_eq!(db.get_cf(&kv, 0u64.to_be_bytes()).unwrap(), Some(value));
    }
}
