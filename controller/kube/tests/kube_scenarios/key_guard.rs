//! The password key checked at start against the one first used.

use devdb_kube::{Passwords, key_guard};
use serde_json::json;

use crate::common::*;

const MAP: &str = "/api/v1/namespaces/devdb/configmaps/devdb-key-fingerprint";

async fn checked(key: &[u8], steps: Vec<Step>) -> Result<(), String> {
    let (client, mut server) = apiserver::client();
    let passwords = Passwords::new(key);
    let check = tokio::spawn(async move { key_guard::check(&client, "devdb", &passwords).await });
    server.run(steps).await;
    check.await.expect("ran").map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_first_key_is_recorded_and_only_it_is_accepted_afterwards() {
    // First start: the fingerprint is recorded (and is not the key).
    let (client, mut server) = apiserver::client();
    let check = tokio::spawn(async move { key_guard::check(&client, "devdb", &Passwords::new(KEY)).await });
    let bodies = server
        .run(vec![
            Step::get(MAP).fail(404, "NotFound"),
            Step::post("/api/v1/namespaces/devdb/configmaps")
                .has(json!({ "metadata": { "name": "devdb-key-fingerprint" } })),
        ])
        .await;
    check.await.expect("ran").expect("recorded");
    let fingerprint = bodies[1]["data"]["fingerprint"].as_str().expect("fingerprint").to_string();
    assert!(!fingerprint.is_empty() && !String::from_utf8_lossy(KEY).contains(&fingerprint));
    let recorded = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "devdb-key-fingerprint" }, "data": { "fingerprint": fingerprint } });
    // The same key again: fine.
    assert_eq!(checked(KEY, vec![Step::get(MAP).reply(recorded.clone())]).await, Ok(()));
    // Another key (a GitOps sync rendered a new Secret): refused, saying what to do.
    let error = checked(b"another key, also 32 bytes or more....", vec![Step::get(MAP).reply(recorded)])
        .await
        .expect_err("refused");
    assert!(error.contains("every database would get a new password") && error.contains("secretKeySecret"), "{error}");
}
