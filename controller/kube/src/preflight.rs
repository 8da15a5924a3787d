//! What the controller checks of the cluster before it leads: the StorageClass and the
//! VolumeSnapshotClass it was given exist, and the one's CSI driver takes the other's snapshots.
//! Without this a missing class shows only hours later, as a project that never restores. And,
//! as a warning, whether the release's namespace has the NLB's pod readiness gates.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};

use crate::resources::ClusterSettings;

const DEFAULT_STORAGE_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const DEFAULT_SNAPSHOT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// In-tree provisioners: no CSI, so no snapshots.
const IN_TREE: &str = "kubernetes.io/";

/// Why the cluster cannot run DevDB as configured.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "StorageClass {0:?} does not exist (--storage-class; the chart creates it with storage.createStorageClass)"
    )]
    NoStorageClass(String),
    #[error("the cluster has no default StorageClass: name one with --storage-class")]
    NoDefaultStorageClass,
    #[error(
        "StorageClass {class:?} uses the in-tree provisioner {provisioner}, which cannot take snapshots: use a class \
         of the EBS CSI driver (ebs.csi.aws.com; the chart creates one)"
    )]
    InTree { class: String, provisioner: String },
    #[error(
        "VolumeSnapshotClass {0:?} does not exist, or the VolumeSnapshot CRDs are not installed (on EKS: the \
         snapshot-controller add-on; see docs/kubernetes.md, 'EKS: before you install')"
    )]
    NoSnapshotClass(String),
    #[error(
        "the cluster has no default VolumeSnapshotClass, or no VolumeSnapshot CRDs: name one with \
         --volume-snapshot-class"
    )]
    NoDefaultSnapshotClass,
    #[error(
        "VolumeSnapshotClass {snapshot_class:?} is for driver {driver}, but StorageClass {class:?} is provisioned by \
         {provisioner}: volumes could not be cloned from its snapshots (on EKS Auto Mode both are \
         ebs.csi.eks.amazonaws.com)"
    )]
    DriverMismatch { snapshot_class: String, driver: String, class: String, provisioner: String },
    #[error("cannot read the cluster's storage classes: {0}")]
    Api(#[source] kube::Error),
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

fn is_default(annotations: &std::collections::BTreeMap<String, String>, key: &str) -> bool {
    annotations.get(key).is_some_and(|v| v == "true")
}

/// Checks the classes of `settings` against the cluster.
///
/// # Errors
/// [`PreflightError`] saying what is missing or mismatched, and how to fix it.
pub async fn check(client: &Client, settings: &ClusterSettings) -> Result<(), PreflightError> {
    let classes = Api::<StorageClass>::all(client.clone());
    let class = match &settings.storage_class {
        Some(name) => match classes.get(name).await {
            Ok(class) => class,
            Err(e) if not_found(&e) => return Err(PreflightError::NoStorageClass(name.clone())),
            Err(e) => return Err(PreflightError::Api(e)),
        },
        None => classes
            .list(&ListParams::default())
            .await
            .map_err(PreflightError::Api)?
            .items
            .into_iter()
            .find(|c| is_default(c.annotations(), DEFAULT_STORAGE_CLASS))
            .ok_or(PreflightError::NoDefaultStorageClass)?,
    };
    if class.provisioner.starts_with(IN_TREE) {
        return Err(PreflightError::InTree { class: class.name_any(), provisioner: class.provisioner });
    }
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass"));
    let snapshot_classes = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let snapshot_class = match &settings.volume_snapshot_class {
        Some(name) => match snapshot_classes.get(name).await {
            Ok(class) => class,
            Err(e) if not_found(&e) => return Err(PreflightError::NoSnapshotClass(name.clone())),
            Err(e) => return Err(PreflightError::Api(e)),
        },
        None => match snapshot_classes.list(&ListParams::default()).await {
            Ok(list) => list.items.into_iter().find(|c| is_default(c.annotations(), DEFAULT_SNAPSHOT_CLASS)),
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(PreflightError::Api(e)),
        }
        .ok_or(PreflightError::NoDefaultSnapshotClass)?,
    };
    let driver = snapshot_class.data["driver"].as_str().unwrap_or_default();
    if driver != class.provisioner {
        return Err(PreflightError::DriverMismatch {
            snapshot_class: snapshot_class.name_any(),
            driver: driver.to_string(),
            class: class.name_any(),
            provisioner: class.provisioner,
        });
    }
    Ok(())
}

/// The label with which the AWS Load Balancer Controller injects readiness gates into a
/// namespace's pods: a rollout then waits until the NLB has registered each new proxy pod.
pub const READINESS_GATE_LABEL: &str = "elbv2.k8s.aws/pod-readiness-gate-inject";

/// What a rollout of the proxies risks in `namespace` (the release's), if anything: without the
/// NLB's readiness gates, new proxy pods count as ready before the NLB sends them anything, and
/// a rollout can take the old ones away first. A warning, not a refusal: clusters without the
/// AWS Load Balancer Controller have no such gates.
///
/// # Errors
/// When the namespace cannot be read.
pub async fn readiness_gates(client: &Client, namespace: &str) -> Result<Option<String>, kube::Error> {
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let enabled = ns.labels().get(READINESS_GATE_LABEL).is_some_and(|v| v == "enabled");
    Ok((!enabled).then(|| {
        format!(
            "namespace {namespace} lacks the label {READINESS_GATE_LABEL}=enabled: with the AWS Load Balancer \
             Controller, proxy rollouts can then refuse clients (kubectl label namespace {namespace} \
             {READINESS_GATE_LABEL}=enabled, then restart the proxies)"
        )
    }))
}
