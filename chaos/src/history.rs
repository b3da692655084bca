//! What clients did: every operation with the time it was sent and, if it was answered,
//! the time of the answer and what it said.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client asked of one key (a register).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A linearizable read.
    Read,
    /// A put of a value no other operation writes.
    Write(String),
    /// A transaction: if the key holds `expect`, put `new`.
    Cas {
        /// The value compared with.
        expect: String,
        /// The value put when it matched.
        new: String,
    },
}

/// What the client learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read's answer: the value, or `None` when the key did not exist.
    Read(Option<String>),
    /// The put was acknowledged.
    Written,
    /// The transaction was answered: whether the compare held (and the put happened).
    Cas(bool),
    /// No answer (timeout, lost connection, an error after sending): the operation may
    /// or may not have taken effect, at any time after it was sent.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client issued it.
    pub client: usize,
    /// The key.
    pub key: String,
    /// The request.
    pub call: Call,
    /// When it was sent, since the history began.
    pub invoked: Duration,
    /// When it was answered (`None` for [`Outcome::Unknown`]).
    pub completed: Option<Duration>,
    /// The answer.
    pub outcome: Outcome,
}

/// The history all clients of one run append to.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }
}

impl History {
    /// Now, on the history's clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records an operation.
    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// Every operation so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many writes (puts and compare-and-sets) were answered within `from..=to`.
    pub fn writes_answered(&self, from: Duration, to: Duration) -> usize {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|o| o.call != Call::Read && o.outcome != Outcome::Unknown)
            .filter(|o| o.completed.is_some_and(|c| c >= from && c <= to))
            .count()
    }
}
