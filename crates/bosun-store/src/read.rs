//! Linearizable reads share their read index. Every read barrier on one server used to
//! run a round of its own: on the leader a heartbeat to every follower (openraft's
//! `get_read_log_id` sends one per call), on a follower a ReadIndex call to the leader,
//! which then ran that heartbeat too. Now concurrent barriers wait for one round, as
//! etcd's read loop does.
//!
//! What keeps it linearizable: a round answers only the callers that queued before it
//! started, so the index it reports was confirmed by a quorum after each of their reads
//! began. A caller that queues while a round is in flight waits for the next one.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Callers queued for the next round at most; more wait for room.
const QUEUE: usize = 4096;

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

/// Runs rounds until `cancel` or until every [`Reads`] is dropped: takes every caller
/// queued so far, runs `round` once, and answers them all with its outcome.
pub async fn rounds<F, Fut>(
    mut rx: mpsc::Receiver<Waiter>,
    cancel: CancellationToken,
    metrics: &Metrics,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut waiters: Vec<Waiter> = Vec::new();
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            w = rx.recv() => match w {
                Some(w) => w,
                None => return,
            },
        };
        waiters.push(first);
        // Everyone queued by now is served by this round; whoever queues from here on
        // waits for the next.
        while waiters.len() < QUEUE {
            match rx.try_recv() {
                Ok(w) => waiters.push(w),
                Err(_) => break,
            }
        }
        // A caller that gave up (its deadline passed) needs no round.
        waiters.retain(|w| !w.is_closed());
        if waiters.is_empty() {
            continue;
        }
        let outcome = tokio::select! {
            // Dropped unanswered: the callers see the rounds end.
            _ = cancel.cancelled() => return,
            o = round() => o,
        };
        metrics.observe_read_round(waiters.len());
        for w in waiters.drain(..) {
            let _ = w.send(outcome.clone());
        }
    }
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
    async fn callers_queued_during_a_round_share_the_next_one_and_never_the_one_in_flight() {
        let (reads, rx) = Reads::new();
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
        // The first caller starts round 1, which waits at the gate.
        let first = tokio::spawn({
            let r = reads.clone();
            async move { r.index().await }
        });
        until("round 1 starts", || started.load(Ordering::SeqCst) == 1).await;
        // Ten more queue while round 1 is in flight.
        let later: Vec<_> = (0..10)
            .map(|_| {
                let r = reads.clone();
                tokio::spawn(async move { r.index().await })
            })
            .collect();
        until("the ten are queued", || reads.tx.capacity() == QUEUE - 10).await;
        gate.add_permits(1);
        assert_eq!(first.await.ok().flatten(), Some(Ok(1)));
        // One more round, for all ten: none of them was answered by round 1.
        until("round 2 starts", || started.load(Ordering::SeqCst) == 2).await;
        gate.add_permits(1);
        for l in later {
            assert_eq!(l.await.ok().flatten(), Some(Ok(2)));
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(metrics.read_rounds.load(Ordering::Relaxed), 2);
        assert_eq!(metrics.read_barriers.load(Ordering::Relaxed), 11);
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
