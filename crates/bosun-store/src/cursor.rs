//! A watch cursor: every change to a key range from a revision on, exactly once and in
//! order, whether it comes from the history on disk or live from the state machine.
//!
//! The cursor subscribes to the state machine's fan-out before it reads any history, so no
//! change falls between the two; when it falls behind the fan-out (or a snapshot replaced
//! the state) it goes back to reading history from where it stopped. Both the etcd Watch
//! service and the API server's watches are built on it.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::command::{ApplyError, Event, KeyRange};
use crate::mvcc::ReadError;
use crate::state_machine::{Shared, WatchMsg};

/// History page read from disk at a time while catching up.
const HISTORY_PAGE: usize = 2000;

/// Why a cursor cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The revision to continue from was compacted away: list again.
    #[error("required revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision the cursor needed.
        requested: i64,
        /// The store's compact revision.
        compacted: i64,
    },
    /// The history on disk could not be read.
    #[error("reading history: {0}")]
    History(#[source] std::io::Error),
    /// The state machine is gone (shutdown).
    #[error("the store is shutting down")]
    Closed,
}

/// What the cursor is doing: an explicit two-state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading pages of history from disk until it reaches the live revision.
    CatchingUp,
    /// Taking events from the state machine's fan-out as they are applied.
    Live,
}

/// Changes to one key range, from a start revision on.
pub struct Cursor {
    state: Arc<Shared>,
    range: KeyRange,
    next: i64,
    sub: broadcast::Receiver<WatchMsg>,
    mode: Mode,
}

/// Changes the cursor moved over, and where it stands after them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Changes in the range, oldest first (possibly none: the cursor still advanced).
    pub events: Vec<Event>,
    /// Every change below this revision has been delivered.
    pub next: i64,
}

impl Cursor {
    /// A cursor over `range` starting at revision `start` (0: after the current revision).
    pub fn new(state: Arc<Shared>, range: KeyRange, start: i64) -> Self {
        let sub = state.subscribe();
        let current = state.revision();
        let next = if start > 0 { start } else { current + 1 };
        let mode = if next <= current {
            Mode::CatchingUp
        } else {
            Mode::Live
        };
        Cursor {
            state,
            range,
            next,
            sub,
            mode,
        }
    }

    /// The first revision not yet delivered.
    pub fn next_revision(&self) -> i64 {
        self.next
    }

    /// The next batch of changes. Cancel-safe: dropping the future loses nothing.
    ///
    /// # Errors
    /// [`CursorError::Compacted`] when the changes needed are gone; the others when the
    /// store cannot be read.
    pub async fn next(&mut self) -> Result<Batch, CursorError> {
        if self.mode == Mode::CatchingUp {
            return self.page();
        }
        let msg = self.sub.recv().await;
        match msg {
            Ok(WatchMsg::Events(evs)) => {
                let events = evs
                    .iter()
                    .filter(|e| e.kv.mod_revision >= self.next && self.range.contains(&e.kv.key))
                    .cloned()
                    .collect();
                if let Some(last) = evs.last() {
                    self.next = self.next.max(last.kv.mod_revision + 1);
                }
                Ok(Batch {
                    events,
                    next: self.next,
                })
            }
            Ok(WatchMsg::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                self.mode = Mode::CatchingUp;
                self.page()
            }
            Err(broadcast::error::RecvError::Closed) => Err(CursorError::Closed),
        }
    }

    fn page(&mut self) -> Result<Batch, CursorError> {
        let (events, next, done) = self
            .state
            .history(self.next, &self.range, HISTORY_PAGE)
            .map_err(|e| match e {
                ReadError::Refused(ApplyError::Compacted) | ReadError::Refused(_) => {
                    CursorError::Compacted {
                        requested: self.next,
                        compacted: self.state.compact_revision(),
                    }
                }
                ReadError::History(e) => CursorError::History(e),
            })?;
        let events = events
            .into_iter()
            .filter(|e| e.kv.mod_revision >= self.next)
            .collect();
        self.next = self.next.max(next);
        if done {
            self.mode = Mode::Live;
        }
        Ok(Batch {
            events,
            next: self.next,
        })
    }
}
