//! The faults: each is injected, held for a while, and healed.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bosun_api::etcd::StatusRequest;
use bosun_testkit::{eventually, Cluster};

use crate::history::History;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 the leader, then start it again.
    KillLeader,
    /// SIGSTOP the leader (a hung process: its sockets stay open), then SIGCONT it.
    PauseLeader,
    /// kill -9 every server at once, then start them all.
    RestartAll,
    /// Drop every packet between the leader and the other servers (iptables rules on
    /// their loopback addresses), then remove the rules. Clients still reach every
    /// server: the old leader is cut off from its peers, not from them.
    PartitionLeader,
    /// The same for one follower: it must not serve stale reads while cut off, and must
    /// catch up once the rules are gone.
    PartitionFollower,
}

/// Whether this process can add and remove iptables rules (root, and the tool present).
pub fn can_partition() -> bool {
    Command::new("iptables")
        .args(["-w", "-L", "INPUT", "-n"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Rules that drop the traffic between two sets of addresses; removed when dropped.
struct Cut {
    pairs: Vec<(String, String)>,
}

fn iptables(op: &str, src: &str, dst: &str) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", op, "INPUT", "-s", src, "-d", dst, "-j", "DROP"])
        .output()
        .map_err(|e| format!("running iptables: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables {op} INPUT -s {src} -d {dst} -j DROP: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl Cut {
    /// Cuts `side` off from `rest`, both ways.
    fn between(side: &[String], rest: &[String]) -> Result<Self, String> {
        let mut cut = Cut { pairs: Vec::new() };
        for a in side {
            for b in rest {
                for (src, dst) in [(a, b), (b, a)] {
                    iptables("-I", src, dst)?;
                    cut.pairs.push((src.clone(), dst.clone()));
                }
            }
        }
        Ok(cut)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for (src, dst) in &self.pairs {
            if let Err(e) = iptables("-D", src, dst) {
                eprintln!("healing the partition: {e}");
            }
        }
    }
}

/// What an injected fault did.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The servers it hit.
    pub victims: Vec<String>,
    /// When it took hold, on the history's clock.
    pub began: Duration,
    /// When it was healed, on the history's clock.
    pub healed: Duration,
}

/// The leader: the server that reports itself the leader and that a majority of the
/// servers name (a leader cut off from its peers may still believe it leads, and
/// another server's view may be stale), polled within 30 s.
///
/// # Errors
/// When no such server is found in time.
pub async fn leader(cluster: &Cluster, servers: &[String]) -> Result<String, String> {
    let majority = servers.len() / 2 + 1;
    eventually(
        Duration::from_secs(30),
        "a leader that a majority names",
        || async {
            // (name, own member id, the leader it names)
            let mut seen: Vec<(&String, u64, u64)> = Vec::new();
            for name in servers {
                let Ok(mut m) = cluster.maintenance(name) else {
                    continue;
                };
                let asked =
                    tokio::time::timeout(Duration::from_millis(500), m.status(StatusRequest {}));
                let Ok(Ok(st)) = asked.await else {
                    continue;
                };
                let st = st.into_inner();
                if let Some(h) = st.header {
                    seen.push((name, h.member_id, st.leader));
                }
            }
            seen.iter()
                .find(|(_, me, leads)| {
                    *leads == *me && seen.iter().filter(|(_, _, l)| *l == *me).count() >= majority
                })
                .map(|(name, _, _)| (*name).clone())
        },
    )
    .await
}

/// `cluster.sh ARGS`, off the runtime's worker threads (it waits for processes).
async fn ctl(cluster: &Arc<Cluster>, args: &[&str]) -> Result<(), String> {
    let cluster = cluster.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.ctl(&args).map(|_| ())
    })
    .await
    .map_err(|e| format!("cluster.sh task: {e}"))?
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
/// then heals it. The times it returns are on `history`'s clock.
///
/// # Errors
/// When the cluster cannot be driven (no leader to hit, a script failure).
pub async fn inject(
    cluster: &Arc<Cluster>,
    servers: &[String],
    history: &History,
    fault: Fault,
    hold: Duration,
) -> Result<Injected, String> {
    let (victims, began) = match fault {
        Fault::KillLeader => {
            let victim = leader(cluster, servers).await?;
            ctl(cluster, &["kill", &victim]).await?;
            let began = history.now();
            tokio::time::sleep(hold).await;
            ctl(cluster, &["start", &victim]).await?;
            (vec![victim], began)
        }
        Fault::PauseLeader => {
            let victim = leader(cluster, servers).await?;
            signal(cluster, &victim, "STOP")?;
            let began = history.now();
            let paused = Paused {
                cluster,
                name: victim.clone(),
            };
            tokio::time::sleep(hold).await;
            drop(paused);
            (vec![victim], began)
        }
        Fault::PartitionLeader | Fault::PartitionFollower => {
            let lead = leader(cluster, servers).await?;
            let victim = match fault {
                Fault::PartitionLeader => lead,
                _ => servers
                    .iter()
                    .find(|s| **s != lead)
                    .cloned()
                    .ok_or("no follower to cut off")?,
            };
            let others: Vec<String> = servers
                .iter()
                .filter(|s| **s != victim)
                .map(|s| cluster.ip(s))
                .collect();
            let cut = Cut::between(&[cluster.ip(&victim)], &others)?;
            let began = history.now();
            tokio::time::sleep(hold).await;
            drop(cut);
            (vec![victim], began)
        }
        Fault::RestartAll => {
            for s in servers {
                ctl(cluster, &["kill", s]).await?;
            }
            let began = history.now();
            tokio::time::sleep(hold).await;
            for s in servers {
                ctl(cluster, &["start", s]).await?;
            }
            (servers.to_vec(), began)
        }
    };
    Ok(Injected {
        fault,
        victims,
        began,
        healed: history.now(),
    })
}
