//! Whether the NLB's readiness gates are injected into the release's namespace.

use devdb_kube::preflight;
use serde_json::{Value, json};

use crate::common::*;

async fn warned(labels: Value) -> Option<String> {
    let (client, mut server) = apiserver::client();
    let check = tokio::spawn(async move { preflight::readiness_gates(&client, "devdb").await });
    server
        .run(vec![Step::get("/api/v1/namespaces/devdb").reply(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "devdb", "labels": labels },
        }))])
        .await;
    check.await.expect("ran").expect("read")
}

#[tokio::test]
async fn a_namespace_without_the_label_is_warned_about_with_the_fix() {
    let warning = warned(json!({ "kubernetes.io/metadata.name": "devdb" })).await.expect("a warning");
    assert!(
        warning.contains("kubectl label namespace devdb elbv2.k8s.aws/pod-readiness-gate-inject=enabled"),
        "{warning}"
    );
    assert_eq!(warned(json!({ preflight::READINESS_GATE_LABEL: "enabled" })).await, None);
}
