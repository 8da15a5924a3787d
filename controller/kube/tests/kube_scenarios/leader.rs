//! Leader election on a Lease: created by the first replica, taken over only after a whole
//! duration unrenewed, renewed without a read, released when the leader stops.

use std::sync::Arc;
use std::time::Duration;

use devdb_kube::leader::LeaderLease;
use serde_json::{Value, json};

use crate::common::*;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/devdb/leases/devdb-controller";

fn held_by(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "devdb-controller", "namespace": "devdb", "resourceVersion": "42" },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
            "acquireTime": "2026-11-23T09:00:00.000000Z", "renewTime": renewed,
        },
    })
}

fn contender(id: &str) -> (LeaderLease, apiserver::ApiServer) {
    let (client, server) = apiserver::client();
    (LeaderLease::new(client, "devdb", "devdb-controller", id, Duration::from_secs(15)), server)
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (lease, mut server) = contender("controller-a");
    let acquiring = tokio::spawn(async move { lease.try_acquire().await });
    server
        .run(vec![
            Step::get(LEASE).fail(404, "NotFound"),
            Step::post("/apis/coordination.k8s.io/v1/namespaces/devdb/leases").has(json!({
                "metadata": { "name": "devdb-controller" },
                "spec": { "holderIdentity": "controller-a", "leaseDurationSeconds": 15, "leaseTransitions": 0 },
            })),
        ])
        .await;
    assert!(acquiring.await.expect("ran").expect("asked"));
}

/// A stopping leader clears the holder, so another replica takes over at its next try; a
/// lease someone else holds is left alone.
#[tokio::test]
async fn a_stopping_leader_releases_the_lease_and_leaves_anothers_alone() {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let (lease, mut server) = contender("controller-a");
    let releasing = tokio::spawn(async move { lease.release().await });
    let bodies = server
        .run(vec![
            Step::get(LEASE).reply(held_by("controller-a", &now, 3)),
            Step::put(LEASE).has(json!({ "metadata": { "resourceVersion": "42" }, "spec": { "leaseTransitions": 3 } })),
        ])
        .await;
    releasing.await.expect("ran");
    let put = bodies.last().expect("the PUT");
    assert!(put["spec"].get("holderIdentity").is_none_or(Value::is_null), "no holder any more: {put}");
    let (lease, mut server) = contender("controller-a");
    let releasing = tokio::spawn(async move { lease.release().await });
    server.run(vec![Step::get(LEASE).reply(held_by("controller-b", &now, 3))]).await;
    releasing.await.expect("ran");
    server.quiet().await;
}

#[tokio::test]
async fn a_live_leader_is_left_alone() {
    let (lease, mut server) = contender("controller-a");
    let acquiring = tokio::spawn(async move { lease.try_acquire().await });
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    server.run(vec![Step::get(LEASE).reply(held_by("controller-b", &now, 3))]).await;
    assert!(!acquiring.await.expect("ran").expect("asked"), "b still leads");
    server.quiet().await;
}

/// Asks once, against `steps`: whether this replica leads afterwards.
async fn ask(lease: &Arc<LeaderLease>, server: &mut apiserver::ApiServer, steps: Vec<Step>) -> bool {
    let asking = tokio::spawn({
        let lease = lease.clone();
        async move { lease.try_acquire().await }
    });
    server.run(steps).await;
    asking.await.expect("ran").expect("asked")
}

#[tokio::test(start_paused = true)]
async fn a_lease_is_taken_over_only_after_a_whole_duration_unrenewed_by_the_contenders_own_clock() {
    let (lease, mut server) = contender("controller-a");
    let lease = Arc::new(lease);
    // The holder's renewTime is far in the past by this replica's clock (clocks differ):
    // that alone proves nothing.
    let renewed = "2026-11-23T09:00:00.000000Z";
    assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed, 3))]).await);
    tokio::time::advance(Duration::from_secs(10)).await;
    // Renewed meanwhile (a new renewTime): the holder is alive; the clock starts again.
    let renewed_again = "2026-11-23T09:00:05.000000Z";
    assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3))]).await);
    tokio::time::advance(Duration::from_secs(14)).await;
    assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3))]).await);
    tokio::time::advance(Duration::from_secs(1)).await;
    // The same record for the whole 15 s: taken over.
    let steps = vec![
        Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3)),
        Step::put(LEASE).has(json!({ "spec": { "holderIdentity": "controller-a", "leaseTransitions": 4 } })),
    ];
    assert!(ask(&lease, &mut server, steps).await);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_and_a_lost_race_is_no_lead() {
    let (lease, mut server) = contender("controller-a");
    let lease = Arc::new(lease);
    let stale = "2026-11-23T09:00:00.000000Z";
    assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3))]).await);
    tokio::time::advance(Duration::from_secs(15)).await;
    let taking = vec![
        Step::get(LEASE).reply(held_by("controller-b", stale, 3)),
        Step::put(LEASE).has(json!({
            "metadata": { "resourceVersion": "42" },
            "spec": { "holderIdentity": "controller-a", "leaseTransitions": 4 },
        })),
    ];
    assert!(ask(&lease, &mut server, taking).await);
    // Another replica wrote first: the resourceVersion no longer matches.
    let racing =
        vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3)), Step::put(LEASE).fail(409, "Conflict")];
    assert!(!ask(&lease, &mut server, racing).await);
}
/// The holder renews with the lease its last write returned: one PUT carrying that
/// resourceVersion, no read; when someone else wrote since (a conflict), it reads the lease.
#[tokio::test(start_paused = true)]
async fn the_holder_renews_without_reading_until_someone_else_writes() {
    let (lease, mut server) = contender("controller-a");
    let lease = Arc::new(lease);
    let stale = "2026-11-23T09:00:00.000000Z";
    assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3))]).await);
    tokio::time::advance(Duration::from_secs(15)).await;
    let written = |version: &str| {
        let mut lease = held_by("controller-a", stale, 4);
        lease["metadata"]["resourceVersion"] = json!(version);
        lease
    };
    let taking = vec![
        Step::get(LEASE).reply(held_by("controller-b", stale, 3)),
        Step::put(LEASE).has(json!({ "spec": { "holderIdentity": "controller-a" } })).reply(written("43")),
    ];
    assert!(ask(&lease, &mut server, taking).await);
    let renewing = vec![
        Step::put(LEASE)
            .has(json!({ "metadata": { "resourceVersion": "43" }, "spec": { "holderIdentity": "controller-a" } }))
            .reply(written("44")),
    ];
    assert!(ask(&lease, &mut server, renewing).await, "renewed with one request");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let overtaken = vec![
        Step::put(LEASE).has(json!({ "metadata": { "resourceVersion": "44" } })).fail(409, "Conflict"),
        Step::get(LEASE).reply(held_by("controller-b", &now, 5)),
    ];
    assert!(!ask(&lease, &mut server, overtaken).await, "b wrote since: a does not lead");
    server.quiet().await;
}
