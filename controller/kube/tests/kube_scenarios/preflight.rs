//! The storage classes checked before the controller leads.

use devdb_kube::preflight;
use devdb_kube::resources::ClusterSettings;
use serde_json::{Value, json};

use crate::common::*;

const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
const SNAPSHOT_CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";

fn storage_class(name: &str, provisioner: &str, default: bool) -> Value {
    let mut class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": { "name": name }, "provisioner": provisioner,
    });
    if default {
        class["metadata"]["annotations"] = json!({ "storageclass.kubernetes.io/is-default-class": "true" });
    }
    class
}

fn snapshot_class(name: &str, driver: &str) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": { "name": name }, "driver": driver, "deletionPolicy": "Delete",
    })
}

/// Runs the check against `steps`; its error message, if any.
async fn checked(settings: ClusterSettings, steps: Vec<Step>) -> Option<String> {
    let (client, mut server) = apiserver::client();
    let check = tokio::spawn(async move { preflight::check(&client, &settings).await });
    server.run(steps).await;
    server.quiet().await;
    check.await.expect("ran").err().map(|e| e.to_string())
}

#[tokio::test]
async fn matching_classes_pass() {
    let steps = vec![
        Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.aws.com", false)),
        Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).reply(snapshot_class("ebs-csi", "ebs.csi.aws.com")),
    ];
    assert_eq!(checked(settings(), steps).await, None);
}

#[tokio::test]
async fn a_missing_storage_class_is_refused_by_name() {
    let steps = vec![Step::get(&format!("{CLASSES}/gp3")).fail(404, "NotFound")];
    let error = checked(settings(), steps).await.expect("refused");
    assert!(error.starts_with("StorageClass \"gp3\" does not exist"), "{error}");
}

#[tokio::test]
async fn the_stock_eks_default_class_cannot_snapshot() {
    let settings = ClusterSettings { storage_class: None, ..settings() };
    let steps = vec![Step::list(CLASSES, vec![storage_class("gp2", "kubernetes.io/aws-ebs", true)])];
    let error = checked(settings, steps).await.expect("refused");
    assert!(error.contains("\"gp2\" uses the in-tree provisioner kubernetes.io/aws-ebs"), "{error}");
}

#[tokio::test]
async fn no_snapshot_crds_or_class_is_refused_with_the_fix() {
    let steps = vec![
        Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.aws.com", false)),
        Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).fail(404, "NotFound"),
    ];
    let error = checked(settings(), steps).await.expect("refused");
    assert!(
        error.contains("VolumeSnapshotClass \"ebs-csi\" does not exist") && error.contains("snapshot-controller"),
        "{error}"
    );
}

#[tokio::test]
async fn a_snapshot_class_of_another_driver_is_refused() {
    // EKS Auto Mode's driver beside the EBS CSI add-on's class.
    let steps = vec![
        Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.eks.amazonaws.com", false)),
        Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).reply(snapshot_class("ebs-csi", "ebs.csi.aws.com")),
    ];
    let error = checked(settings(), steps).await.expect("refused");
    assert!(
        error.contains(
            "is for driver ebs.csi.aws.com, but StorageClass \"gp3\" is provisioned by ebs.csi.eks.amazonaws.com"
        ),
        "{error}"
    );
}
