//! Liveness, readiness and startup probes: httpGet, tcpSocket and exec, with Kubernetes'
//! timing fields (initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
//! failureThreshold).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container as KContainer, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::runtime::ContainerRuntime;

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, with why.
    Failure(String),
}

/// One probe's counters for one running container.
#[derive(Debug, Clone)]
pub struct Tracker {
    probe: Probe,
    /// When the next run is due.
    next: Instant,
    successes: i32,
    failures: i32,
    /// The current verdict (after the thresholds).
    pub passing: bool,
    /// The last failure message.
    pub last_failure: Option<String>,
}

impl Tracker {
    /// A tracker for a container that started at `started`; `initially` is the verdict
    /// before the first run (readiness: false, liveness: true).
    pub fn new(probe: Probe, started: Instant, initially: bool) -> Self {
        let delay = secs(probe.initial_delay_seconds, 0);
        Tracker {
            probe,
            next: started + delay,
            successes: 0,
            failures: 0,
            passing: initially,
            last_failure: None,
        }
    }

    /// When the next run is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Whether the probe has failed `failureThreshold` times in a row (for liveness and
    /// startup: time to restart the container).
    pub fn exhausted(&self) -> bool {
        self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1)
    }

    /// Records a run's outcome; returns whether the verdict changed.
    pub fn record(&mut self, now: Instant, outcome: Outcome) -> bool {
        self.next = now + secs(self.probe.period_seconds, 10);
        let before = self.passing;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = true;
                }
            }
            Outcome::Failure(why) => {
                self.successes = 0;
                self.failures += 1;
                self.last_failure = Some(why);
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }

    /// Runs the probe once against a container at `ip` (runtime id `id`).
    pub async fn run<R: ContainerRuntime>(
        &self,
        rt: &R,
        id: &str,
        ip: &str,
        container: &KContainer,
    ) -> Outcome {
        run(rt, &self.probe, id, ip, container).await
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
}

/// Resolves a probe port: a number, or the name of one of the container's ports.
fn port(p: &IntOrString, c: &KContainer) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?} in container {:?}", c.name)),
    }
}

async fn run<R: ContainerRuntime>(
    rt: &R,
    probe: &Probe,
    id: &str,
    ip: &str,
    c: &KContainer,
) -> Outcome {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_millis(100));
    let result: Result<(), String> = if let Some(h) = &probe.http_get {
        match port(&h.port, c) {
            Err(e) => Err(e),
            Ok(_)
                if h.scheme
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("https")) =>
            {
                Err("httpGet with scheme HTTPS is not supported by this agent".into())
            }
            Ok(p) => {
                let host = h
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| ip.to_string());
                let path = h
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into());
                let headers: Vec<(String, String)> = h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|hh| (hh.name.clone(), hh.value.clone()))
                    .collect();
                match tokio::time::timeout(timeout, http_get(&host, p, &path, &headers)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "Get \"http://{host}:{p}{path}\": timeout after {timeout:?}"
                    )),
                }
            }
        }
    } else if let Some(t) = &probe.tcp_socket {
        match port(&t.port, c) {
            Err(e) => Err(e),
            Ok(p) => {
                let host = t
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| ip.to_string());
                match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), p))).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {host}:{p}: {e}")),
                    Err(_) => Err(format!("dial tcp {host}:{p}: timeout after {timeout:?}")),
                }
            }
        }
    } else if let Some(e) = &probe.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            Err("exec probe without a command".into())
        } else {
            match rt.exec(id, &cmd, timeout).await {
                Ok(o) if o.code == 0 => Ok(()),
                Ok(o) => Err(format!(
                    "command {cmd:?} exited with {}: {}",
                    o.code,
                    String::from_utf8_lossy(&o.output).trim()
                )),
                Err(e) => Err(e.to_string()),
            }
        }
    } else if probe.grpc.is_some() {
        Err("grpc probes are not supported by this agent".into())
    } else {
        Err("probe has no handler".into())
    };
    match result {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Failure(e),
    }
}

/// A minimal HTTP/1.1 GET: success is a status from 200 to 399, as the kubelet judges.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut s = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bosun-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 12 {
        let r = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let t0 = Instant::now();
        let mut t = Tracker::new(
            probe(
                serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 2,
                "initialDelaySeconds": 5, "failureThreshold": 2, "successThreshold": 2}),
            ),
            t0,
            false,
        );
        assert_eq!(t.due(), t0 + Duration::from_secs(5));
        assert!(!t.record(t0, Outcome::Success));
        assert_eq!(t.due(), t0 + Duration::from_secs(2));
        assert!(t.record(t0, Outcome::Success), "two successes make it pass");
        assert!(!t.record(t0, Outcome::Failure("x".into())));
        assert!(t.passing);
        assert!(!t.exhausted());
        assert!(
            t.record(t0, Outcome::Failure("y".into())),
            "two failures make it fail"
        );
        assert!(t.exhausted());
        assert_eq!(t.last_failure.as_deref(), Some("y"));
    }

    #[test]
    fn a_startup_probe_is_not_exhausted_before_its_failure_threshold() {
        let t0 = Instant::now();
        // Initially failing (a startup probe), 30 failures allowed.
        let mut t = Tracker::new(
            probe(serde_json::json!({"exec": {"command": ["true"]}, "failureThreshold": 30})),
            t0,
            false,
        );
        for _ in 0..29 {
            t.record(t0, Outcome::Failure("not yet".into()));
            assert!(!t.exhausted(), "restarted before its threshold");
        }
        t.record(t0, Outcome::Failure("never".into()));
        assert!(t.exhausted());
    }

    #[tokio::test]
    async fn http_get_judges_status_codes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await.unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        assert_eq!(http_get("127.0.0.1", p, "/healthz", &[]).await, Ok(()));
        assert_eq!(
            http_get("127.0.0.1", p, "/healthz", &[]).await,
            Err("HTTP probe failed with statuscode: 503".to_string())
        );
        server.await.unwrap();
        assert!(
            http_get("127.0.0.1", p, "/", &[]).await.is_err(),
            "nothing listens"
        );
    }
}
