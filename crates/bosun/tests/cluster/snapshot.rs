//! A follower that was down while the log was purged catches up by snapshot.

use std::time::Duration;

use bosun_api::admin::admin_client::AdminClient;
use bosun_api::admin::StatusRequest;

use crate::util::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_behind_a_purged_log_catches_up_by_snapshot() {
    let c = up(3, &["--snapshot-every", "50"]);
    let l = leader(&c, &ALL).await;
    let down = ALL.iter().copied().find(|n| *n != l).unwrap();
    c.ctl(&["kill", down]).unwrap();
    let mut kv = c.kv(&l).unwrap();
    for i in 0..300 {
        put(&mut kv, &format!("/s/{i:04}"), &format!("v{i}"))
            .await
            .unwrap();
    }
    let mut admin = AdminClient::new(c.channel_as(&l, &c.admin_tls()).unwrap());
    eventually(
        Duration::from_secs(20),
        "the leader to purge its log",
        || {
            let mut admin = admin.clone();
            async move {
                let st = admin.status(StatusRequest {}).await.ok()?.into_inner();
                (st.purged_index > 100).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let _ = admin.status(StatusRequest {}).await;
    c.ctl(&["start", down]).unwrap();
    let mut kv = c.kv(down).unwrap();
    eventually(
        Duration::from_secs(30),
        "the restarted follower to have the last key",
        || {
            let mut kv = kv.clone();
            async move { get(&mut kv, "/s/0299", true).await.ok().flatten() }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        get(&mut kv, "/s/0000", true).await.unwrap().as_deref(),
        Some("v0")
    );
    assert_eq!(dump(&c, down, "/s/").await.unwrap().len(), 300);
    assert!(
        c.log(down).contains("snapshot installed"),
        "log of {down}:\n{}",
        c.log(down)
    );
}
