//! openraft's storage conformance suite on our RocksDB log store and state machine.

use bosun_store::types::typ::StorageError;
use bosun_store::{db, LogStore, StateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let err = |e: String| -> StorageError {
            StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::error(e)).into()
        };
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let db = db::open(dir.path()).map_err(|e| err(e.to_string()))?;
        let sm = StateMachine::open(db.clone(), dir.path()).map_err(|e| err(e.to_string()))?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}
