//! Debian's etcdctl (etcd 3.4) against bosun: put/get/del/watch/txn/lease/member
//! list/endpoint status.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

fn etcdctl_available() -> bool {
    let ok = Command::new("etcdctl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("etcdctl is missing (apt-get install etcd-client): required under CI=true");
    }
    ok
}

fn envs(c: &Cluster) -> Vec<(String, String)> {
    std::fs::read_to_string(c.env_file())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn etcdctl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("etcdctl");
    cmd.args(args)
        .envs(envs(c))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_works_against_bosun() {
    if !etcdctl_available() {
        eprintln!("skipping: etcdctl not installed");
        return;
    }
    let c = up(3, &[]);
    assert_eq!(etcdctl(&c, &["put", "/e/a", "1"], None).trim(), "OK");
    etcdctl(&c, &["put", "/e/b", "2"], None);
    assert_eq!(
        etcdctl(&c, &["get", "--prefix", "/e/"], None),
        "/e/a\n1\n/e/b\n2\n"
    );
    assert_eq!(
        etcdctl(&c, &["get", "--prefix", "/e/", "--keys-only"], None),
        "/e/a\n\n/e/b\n\n"
    );
    let txn = "value(\"/e/a\") = \"1\"\n\nput /e/a 10\n\nput /e/a 20\n\n";
    assert!(etcdctl(&c, &["txn"], Some(txn)).starts_with("SUCCESS"));
    assert_eq!(
        etcdctl(&c, &["get", "/e/a", "--print-value-only"], None).trim(),
        "10"
    );
    assert!(etcdctl(&c, &["txn"], Some(txn)).starts_with("FAILURE"));
    assert_eq!(
        etcdctl(&c, &["get", "/e/a", "--print-value-only"], None).trim(),
        "20"
    );
    assert_eq!(etcdctl(&c, &["del", "/e/b"], None).trim(), "1");

    // Watch from revision 1 replays history.
    let mut watch = Command::new("etcdctl")
        .args(["watch", "--prefix", "/e/", "--rev", "1"])
        .envs(envs(&c))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // Stop on the whole last event: a read may end between its lines.
            if String::from_utf8_lossy(&buf).contains("DELETE\n/e/b\n") {
                break;
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("PUT\n/e/a\n1"), "{seen}");
    assert!(seen.contains("DELETE\n/e/b"), "{seen}");

    let grant = etcdctl(&c, &["lease", "grant", "60"], None);
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    etcdctl(&c, &["put", "--lease", &id, "/e/l", "v"], None);
    let ttl = etcdctl(&c, &["lease", "timetolive", &id, "--keys"], None);
    assert!(ttl.contains("/e/l"), "{ttl}");
    assert!(etcdctl(&c, &["lease", "list"], None).contains(&id));
    etcdctl(&c, &["lease", "keep-alive", "--once", &id], None);
    etcdctl(&c, &["lease", "revoke", &id], None);
    assert_eq!(etcdctl(&c, &["get", "/e/l"], None), "");

    let members = etcdctl(&c, &["member", "list"], None);
    for n in ALL {
        assert!(members.contains(&format!(", {n}, ")), "{members}");
    }
    let status = etcdctl(&c, &["endpoint", "status", "-w", "table"], None);
    assert_eq!(status.matches("3.4.0").count(), 3, "{status}");
    assert_eq!(
        status.matches("true").count(),
        1,
        "exactly one leader: {status}"
    );
    assert!(etcdctl(&c, &["endpoint", "health"], None).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_deletes_its_keys_through_the_log() {
    if !etcdctl_available() {
        return;
    }
    let c = up(3, &[]);
    let grant = etcdctl(&c, &["lease", "grant", "2"], None);
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    etcdctl(&c, &["put", "--lease", &id, "/x/ephemeral", "v"], None);
    let mut kv = c.kv("s3").unwrap();
    assert!(get(&mut kv, "/x/ephemeral", false).await.unwrap().is_some());
    eventually(Duration::from_secs(15), "the lease to expire", || {
        let mut kv = kv.clone();
        async move {
            get(&mut kv, "/x/ephemeral", false)
                .await
                .ok()
                .filter(|v| v.is_none())
                .map(|_| ())
        }
    })
    .await
    .unwrap();
}
