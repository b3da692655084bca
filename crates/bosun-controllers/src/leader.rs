//! Leader-only work: started when this server becomes Raft leader, stopped — cancelled and
//! awaited — as soon as it is not, before it could act on anything else.

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where leader-only work stands on this server.
#[derive(Debug)]
enum State {
    /// Not the leader: nothing runs.
    Idle,
    /// Leading in `term`: the tasks run until `cancel`.
    Leading {
        term: u64,
        cancel: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
    },
}

async fn stop(state: State) {
    if let State::Leading {
        term,
        cancel,
        tasks,
    } = state
    {
        cancel.cancel();
        for t in tasks {
            let _ = t.await;
        }
        tracing::info!(term, "leader-only work stopped");
    }
}

/// Runs `start(term, cancel)`'s tasks while `leader_term` holds `Some(term)` (this server
/// leads in `term`); stops them when it changes, and at `shutdown`.
pub async fn while_leading<F>(
    mut leader_term: watch::Receiver<Option<u64>>,
    shutdown: CancellationToken,
    start: F,
) where
    F: Fn(u64, CancellationToken) -> Vec<JoinHandle<()>>,
{
    let mut state = State::Idle;
    loop {
        let now = *leader_term.borrow_and_update();
        let keep = matches!((&state, now), (State::Leading { term, .. }, Some(t)) if *term == t);
        if !keep {
            stop(std::mem::replace(&mut state, State::Idle)).await;
            if let Some(term) = now {
                let cancel = shutdown.child_token();
                let tasks = start(term, cancel.clone());
                tracing::info!(term, "leader-only work started (scheduler, controllers)");
                state = State::Leading {
                    term,
                    cancel,
                    tasks,
                };
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = leader_term.changed() => if r.is_err() { break },
        }
    }
    stop(state).await;
}
