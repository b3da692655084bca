//! Bad input gets a clear error naming the problem, and changes nothing.

use std::process::Command;

use bosun_api::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use bosun_api::etcd::{Compare, PutRequest, RangeRequest, TxnRequest};

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn oversized_malformed_and_dangling_requests_are_refused_without_effect() {
    let c = up(3, &[]);
    let mut kv = c.kv("s2").unwrap();
    // Just over the 1.5 MiB value limit: the store's own error.
    let big = vec![b'x'; 1536 * 1024 + 1];
    let err = kv
        .put(PutRequest {
            key: "/b/big".into(),
            value: big,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("request is too large"), "{err}");
    // Far over it: refused by the transport before it is even decoded.
    let huge = vec![b'x'; 8 << 20];
    let err = kv
        .put(PutRequest {
            key: "/b/big".into(),
            value: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("too large"), "{err}");
    assert_eq!(get(&mut kv, "/b/big", false).await.unwrap(), None);

    let err = kv
        .put(PutRequest {
            key: vec![],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("key is not provided"), "{err}");

    let err = kv
        .put(PutRequest {
            key: "/b/l".into(),
            value: b"v".to_vec(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("lease not found"), "{err}");
    assert_eq!(get(&mut kv, "/b/l", false).await.unwrap(), None);

    let err = kv
        .range(RangeRequest {
            key: "/b".into(),
            sort_order: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("sort order"), "{err}");

    let bad_compare = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: "/b".into(),
        target_union: Some(TargetUnion::Value(b"x".to_vec())),
        range_end: vec![],
    };
    let err = kv
        .txn(TxnRequest {
            compare: vec![bad_compare],
            success: vec![],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("compare target"), "{err}");

    let err = kv
        .range(RangeRequest {
            key: "/b".into(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("future revision"), "{err}");
    // The cluster still works.
    put(&mut kv, "/b/ok", "1").await.unwrap();
}

/// Runs `bosun server -c cfg`, which must exit with an error; returns what it said.
fn server_refuses(cfg: &std::path::Path) -> String {
    let out = Command::new(bin())
        .args(["server", "-c"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the server started with {}",
        cfg.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_corrupted_data_dir_or_config_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    bosun_pki::Pki::init(&pki, "t")
        .unwrap()
        .issue_server(&bosun_pki::ca::ServerSpec::parse("s1=127.0.99.11").unwrap())
        .unwrap();
    // What `bosun pki init` writes beside the CA.
    std::fs::write(
        pki.join("secrets.key"),
        bosun_apiserver::SecretKeys::generate_line("key1"),
    )
    .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::write(data.join("db/000001.sst"), b"not a table").unwrap();
    let cfg = dir.path().join("s1.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"s1\"\nid = 1\ndata_dir = \"{d}\"\npeer_addr = \"127.0.99.11:2380\"\nclient_addr = \"127.0.99.11:2379\"\n\
             [tls]\nca = \"{p}/ca.crt\"\ncert = \"{p}/servers/s1.crt\"\nkey = \"{p}/servers/s1.key\"\n\
             [[members]]\nid = 1\nname = \"s1\"\npeer_addr = \"127.0.99.11:2380\"\nclient_addr = \"127.0.99.11:2379\"\n",
            d = data.display(),
            p = pki.display()
        ),
    )
    .unwrap();
    let err = server_refuses(&cfg);
    assert!(
        err.contains("opening database") && err.contains("refusing"),
        "{err}"
    );
    assert!(
        data.join("db/000001.sst").exists(),
        "nothing may be deleted"
    );

    // A corrupted CURRENT file in a real database.
    std::fs::remove_dir_all(data.join("db")).unwrap();
    std::fs::create_dir_all(data.join("db")).unwrap();
    std::fs::write(data.join("db/CURRENT"), b"MANIFEST-999999\n").unwrap();
    let err = server_refuses(&cfg);
    assert!(err.contains("opening database"), "{err}");

    // A missing or malformed Secrets key: refused, naming the file.
    std::fs::write(pki.join("secrets.key"), "key1 not-base64!\n").unwrap();
    let err = server_refuses(&cfg);
    assert!(
        err.contains("secrets.key") && err.contains("line 1"),
        "{err}"
    );
    std::fs::remove_file(pki.join("secrets.key")).unwrap();
    let err = server_refuses(&cfg);
    assert!(
        err.contains("secrets.key") && err.contains("No such file"),
        "{err}"
    );

    std::fs::write(&cfg, "name = 1\n").unwrap();
    let err = server_refuses(&cfg);
    assert!(err.contains("s1.toml"), "{err}");
}
