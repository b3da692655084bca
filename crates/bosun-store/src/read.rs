//! Linearizable reads share their read index. Every read barrier on one server used to
//! run a round of its own: on the leader a heartbeat to every follower (openraft's
//! `get_read_log_id` sends one per call), on a follower a ReadIndex call to the leader,
//! which then ran that heartbeat too. Now concurrent barriers wait for one round, as
//! etcd's read loop does.
//!
//! What keeps it linearizable: a round answers only the callers that queued before it
//! started, so the index it reports was confirmed by a quorum after each of their reads
//! began. A caller that queues while rounds are in flight waits for a later one: at once
//! while fewer than [`ROUNDS_IN_FLIGHT`] run, else until one ends.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Callers queued for the next round at most; more wait for room.
const QUEUE: usize = 4096;
/// Rounds in flight at most. More than one, so that a read arriving just after a round
/// started need not wait for it to end before its own starts (under a saturated CPU a
/// round takes milliseconds, and an API write waits for one); few, so that many
/// concurrent reads still share rounds.
pub const ROUNDS_IN_FLIGHT: usize = 2;

/// A round's outcome: the index a read must see applied, or why there is none (the
/// callers retry, as for any leader trouble).
pub type Answer = std::result::Result<u64, String>;

/// One queued caller.
pub type Waiter = oneshot::Sender<Answer>;

/// The queue into a server's rounds (cheap to clone).
#[derive(Clone, Debug)]
pub struct Reads {
    tx: mpsc::Sender<Waiter>,
}

impl Reads {
    /// A queue, and its receiving end for [`rounds`].
    pub fn new() -> (Reads, mpsc::Receiver<Waiter>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Reads { tx }, rx)
    }

    /// The outcome of the first round that starts after this call; `None` once the
    /// rounds have ended (the server is shutting down).
    pub async fn index(&self) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// Runs rounds until `cancel` or until every [`Reads`] is dropped. Whenever fewer than
/// [`ROUNDS_IN_FLIGHT`] rounds are in flight and callers are queued, it takes all of them
/// and starts a round for them with `round`; each round answers its callers with its
/// outcome.
pub async fn rounds<F, Fut>(
    mut rx: mpsc::Receiver<Waiter>,
    cancel: CancellationToken,
    metrics: &Metrics,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Dropped unanswered: the callers see the rounds end.
            _ = cancel.cancelled() => return,
            Some((waiters, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                let (waiters, outcome): (Vec<Waiter>, Answer) = (waiters, outcome);
                metrics.observe_read_round(waiters.len());
                for w in waiters {
                    let _ = w.send(outcome.clone());
                }
            }
            w = rx.recv(), if in_flight.len() < ROUNDS_IN_FLIGHT => {
                let Some(first) = w else { return };
                // Everyone queued by now is served by this round; whoever queues from
                // here on waits for a later one.
                let mut waiters = vec![first];
                while waiters.len() < QUEUE {
                    match rx.try_recv() {
                        Ok(w) => waiters.push(w),
                        Err(_) => break,
                    }
                }
                // A caller that gave up (its deadline passed) needs no round.
                waiters.retain(|w| !w.is_closed());
                if !waiters.is_empty() {
                    in_flight.push(answer_after(waiters, round()));
                }
            }
        }
    }
}

/// A round's callers, with the round's outcome once it has run.
async fn answer_after<Fut: Future<Output = Answer>>(
    waiters: Vec<Waiter>,
    round: Fut,
) -> (Vec<Waiter>, Answer) {
    (waiters, round.await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// Rounds that each wait for a permit, and answer with their own number (1, 2, ...).
    fn gated(
        gate: Arc<Semaphore>,
        started: Arc<AtomicU64>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> {
        move || {
            let (gate, started) = (gate.clone(), started.clone());
            Box::pin(async move {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                let permit = gate.acquire().await.map_err(|e| e.to_string())?;
                permit.forget();
                Ok(n)
            })
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn callers_queued_while_rounds_run_share_a_later_one_never_one_in_flight() {
        assert_eq!(ROUNDS_IN_FLIGHT, 2, "the steps below assume two");
        let (reads, rx) = Reads::new();
        // Rounds wait at the gate in the order they started (the semaphore is fair).
        let gate = Arc::new(Semaphore::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let metrics = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (gate, started, metrics, cancel) = (
                gate.clone(),
                started.clone(),
                metrics.clone(),
                cancel.clone(),
            );
            async move { rounds(rx, cancel, &metrics, gated(gate, started)).await }
        });
        let ask = || {
            let r = reads.clone();
            tokio::spawn(async move { r.index().await })
        };
        // One caller: round 1 starts at once. A second, while it runs: round 2 starts at
        // once too (two may run).
        let first = ask();
        until("round 1 starts", || started.load(Ordering::SeqCst) == 1).await;
        let second = ask();
        until("round 2 starts", || started.load(Ordering::SeqCst) == 2).await;
        // Ten more while both run: they wait, and no third round starts.
        let later: Vec<_> = (0..10).map(|_| ask()).collect();
        until("the ten are queued", || reads.tx.capacity() == QUEUE - 10).await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        // Round 1 ends: its caller gets it, and one round starts for all ten.
        gate.add_permits(1);
        assert_eq!(first.await.ok().flatten(), Some(Ok(1)));
        until("round 3 starts", || started.load(Ordering::SeqCst) == 3).await;
        gate.add_permits(2);
        assert_eq!(second.await.ok().flatten(), Some(Ok(2)));
        for l in later {
            assert_eq!(l.await.ok().flatten(), Some(Ok(3)));
        }
        assert_eq!(started.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.read_rounds.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.read_barriers.load(Ordering::Relaxed), 12);
        // A failed round fails each of its callers, who may ask again.
        gate.close();
        assert!(matches!(reads.index().await, Some(Err(_))));
        cancel.cancel();
        let _ = task.await;
        assert_eq!(reads.index().await, None, "the rounds ended with the token");
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_costs_no_round() {
        let (reads, rx) = Reads::new();
        let metrics = Arc::new(Metrics::default());
        let rounds_run = Arc::new(AtomicU64::new(0));
        // Queue a caller and drop it before the rounds start.
        let gone = reads.clone();
        let (tx, rx_answer) = oneshot::channel();
        gone.tx.send(tx).await.ok();
        drop(rx_answer);
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (metrics, cancel, rounds_run) =
                (metrics.clone(), cancel.clone(), rounds_run.clone());
            async move {
                rounds(rx, cancel, &metrics, || {
                    rounds_run.fetch_add(1, Ordering::SeqCst);
                    async { Ok(7) }
                })
                .await
            }
        });
        assert_eq!(reads.index().await, Some(Ok(7)));
        assert_eq!(rounds_run.load(Ordering::SeqCst), 1);
        assert_eq!(metrics.read_barriers.load(Ordering::Relaxed), 1);
        cancel.cancel();
        let _ = task.await;
    }
}
