//! The faults: each is injected, held for a while, and healed.

use std::process::Command;
use std::time::Duration;

use bosun_testkit::{eventually, Cluster};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the leader, then start it again.
    KillLeader,
    /// SIGSTOP the leader (a hung process: its sockets stay open), then SIGCONT it.
    PauseLeader,
    /// kill -9 every server at once, then start them all.
    RestartAll,
}

/// What an injected fault did.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The servers it hit.
    pub victims: Vec<String>,
}

/// The leader among `servers`, as they report it (polled, within 30 s).
///
/// # Errors
/// When no server names a leader in time.
pub async fn leader(cluster: &Cluster, servers: &[String]) -> Result<String, String> {
    let names: Vec<&str> = servers.iter().map(String::as_str).collect();
    eventually(Duration::from_secs(30), "a leader", || {
        cluster.leader(&names)
    })
    .await
}

fn signal(cluster: &Cluster, name: &str, sig: &str) -> Result<(), String> {
    let pid_file = cluster.dir.path().join(format!("{name}.pid"));
    let pid = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("reading {}: {e}", pid_file.display()))?;
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.trim())
        .status()
        .map_err(|e| format!("running kill: {e}"))?;
    if !status.success() {
        return Err(format!("kill -{sig} {} ({name}) failed", pid.trim()));
    }
    Ok(())
}

/// Resumes a paused server when dropped, so that a failing scenario never leaves a
/// stopped process behind.
struct Paused<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = signal(self.cluster, &self.name, "CONT");
    }
}

/// Injects `fault`, holds it for `hold` (the fault's length, not a wait for anything),
/// then heals it.
///
/// # Errors
/// When the cluster cannot be driven (no leader to hit, a script failure).
pub async fn inject(
    cluster: &Cluster,
    servers: &[String],
    fault: Fault,
    hold: Duration,
) -> Result<Injected, String> {
    match fault {
        Fault::KillLeader => {
            let victim = leader(cluster, servers).await?;
            cluster.ctl(&["kill", &victim])?;
            tokio::time::sleep(hold).await;
            cluster.ctl(&["start", &victim])?;
            Ok(Injected {
                fault,
                victims: vec![victim],
            })
        }
        Fault::PauseLeader => {
            let victim = leader(cluster, servers).await?;
            signal(cluster, &victim, "STOP")?;
            let paused = Paused {
                cluster,
                name: victim.clone(),
            };
            tokio::time::sleep(hold).await;
            drop(paused);
            Ok(Injected {
                fault,
                victims: vec![victim],
            })
        }
        Fault::RestartAll => {
            for s in servers {
                cluster.ctl(&["kill", s])?;
            }
            tokio::time::sleep(hold).await;
            for s in servers {
                cluster.ctl(&["start", s])?;
            }
            Ok(Injected {
                fault,
                victims: servers.to_vec(),
            })
        }
    }
}
