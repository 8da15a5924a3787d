//! The harness: the reconciler over the kube store and runtime, talking to a scripted API server
//! (`apiserver`), with the cluster's settings, the API paths, and the resources (`objects`) and
//! request sequences (`steps`) the scenarios share.

pub mod apiserver;
mod objects;
mod steps;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use devdb_core::model::Key;
use devdb_core::queue::{self, Passes};
use devdb_core::reconcile::Reconciler;
use devdb_kube::resources::{self, ClusterSettings};
use devdb_kube::{CrdStore, KubePlatform, KubeRuntime, Passwords, Waits};
use devdb_shared::{Domain, Name};
use serde_json::{Value, json};

pub use apiserver::Step;
pub use objects::*;
pub use steps::*;

pub const KEY: &[u8] = b"the controller's secret key, 32+ bytes long";
pub const PROJECTS: &str = "/apis/devdb.io/v1alpha1/projects";
pub const DATABASES: &str = "/apis/devdb.io/v1alpha1/databases";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
pub const NS: &str = "/api/v1/namespaces/devdb-shop";
pub const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase%3Dkate-pg";
pub const JOBS: &str = "/apis/batch/v1/namespaces/devdb-shop/jobs";
pub const SNAPSHOTS: &str = "/apis/snapshot.storage.k8s.io/v1/namespaces/devdb-shop/volumesnapshots";
pub const STATEFULSET: &str = "/apis/apps/v1/namespaces/devdb-shop/statefulsets/kate-pg";

pub fn settings() -> ClusterSettings {
    ClusterSettings {
        image: "devdb/postgres-db:16".into(),
        storage_class: Some("gp3".into()),
        volume_snapshot_class: Some("ebs-csi".into()),
        volume_size: "20Gi".into(),
        restore_cpu: "1".into(),
        restore_memory: "2Gi".into(),
        restore_deadline: std::time::Duration::from_secs(6 * 3600),
        proxy_namespace: "devdb".into(),
        proxy_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "devdb-proxy".into())]),
        controller_namespace: "devdb".into(),
        // The probe needs the cluster's DNS and network (`isolation` has its own tests).
        require_network_policy: false,
        source_credentials: None,
        restore_account_annotations: BTreeMap::new(),
        project_access: Some(resources::ProjectAccess {
            cluster_role: "devdb-project".into(),
            service_account: "devdb-controller".into(),
        }),
        cluster_domain: "cluster.local".into(),
    }
}

pub fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// The reconciler over the kube runtime, talking to a scripted API server.
pub struct Cluster {
    pub reconciler: Arc<Reconciler<KubePlatform>>,
    pub server: apiserver::ApiServer,
    /// Passes the reconciler asks the controllers for (as the leader keeps them).
    pub passes: Passes,
}

pub fn cluster(settings: ClusterSettings) -> Cluster {
    impatient_cluster(settings, Duration::from_secs(3600))
}

/// A cluster whose waits fail once a pod has been blocked for `stuck`.
pub fn impatient_cluster(settings: ClusterSettings, stuck: Duration) -> Cluster {
    cluster_with(settings, stuck, None)
}

/// A cluster whose databases with backups archive as `backups` says.
pub fn backup_cluster(backups: devdb_kube::backups::BackupSettings) -> Cluster {
    cluster_with(settings(), Duration::from_secs(3600), Some(backups))
}

fn cluster_with(
    settings: ClusterSettings,
    stuck: Duration,
    backups: Option<devdb_kube::backups::BackupSettings>,
) -> Cluster {
    let (client, server) = apiserver::client();
    let waits = Waits {
        every: Duration::from_millis(1),
        restore: Duration::from_secs(30),
        snapshot: Duration::from_secs(30),
        ready: Duration::from_secs(30),
        release: Duration::from_secs(30),
        stuck,
    };
    let domain = Domain::new("db.example.com").expect("domain");
    let runtime = Arc::new(KubeRuntime::new(client.clone(), settings, 16, domain, 5432, waits).with_backups(backups));
    let reporter =
        kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: Some("test".into()) };
    let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
    let (scheduler, passes) = queue::channel();
    passes.lead();
    Cluster { reconciler: Reconciler::new(store, runtime, scheduler, Default::default()), server, passes }
}

impl Cluster {
    /// Runs one reconcile pass of `key` against `steps`, then checks nothing else was asked.
    pub async fn pass(&mut self, key: Key, steps: Vec<Step>) -> Vec<Value> {
        let reconciler = self.reconciler.clone();
        let mut pass = tokio::spawn(async move { reconciler.reconcile(&key).await });
        let bodies = tokio::select! {
            bodies = self.server.run(steps) => bodies,
            result = &mut pass => panic!("the pass ended before the script: {result:?}"),
        };
        pass.await.expect("pass ran").expect("pass succeeded");
        self.server.quiet().await;
        bodies
    }

    /// Like [`Cluster::pass`], for a pass that ends in an error (to be retried with backoff).
    pub async fn failing_pass(&mut self, key: Key, steps: Vec<Step>) -> String {
        let reconciler = self.reconciler.clone();
        let mut pass = tokio::spawn(async move { reconciler.reconcile(&key).await });
        tokio::select! {
            _ = self.server.run(steps) => {}
            result = &mut pass => panic!("the pass ended before the script: {result:?}"),
        };
        let error = pass.await.expect("pass ran").expect_err("the pass failed");
        self.server.quiet().await;
        error.to_string()
    }

    pub fn asked_for(&mut self) -> Vec<Key> {
        std::iter::from_fn(|| self.passes.try_next()).collect()
    }
}

pub fn background() -> Value {
    json!({ "propagationPolicy": "Background" })
}

pub fn project_password() -> String {
    Passwords::new(KEY).password("project", "shop", "uid-shop")
}

pub fn database_password() -> String {
    Passwords::new(KEY).password("database", "kate-pg", "uid-kate")
}
