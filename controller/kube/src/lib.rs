//! The Kubernetes runtime adapter: the state as custom resources (`Project`, `Database`, group
//! `devdb.io`), each project a namespace with its restored snapshots, each database a clone of
//! one running as a one-pod StatefulSet behind a ClusterIP Service, and kube-rs controllers
//! running the core's reconciler.
//!
//! - [`crd`]: the resource types (their CRDs are generated into the chart);
//! - [`store`]: the [`Store`](devdb_core::store::Store) over the resources;
//! - [`runtime`]: the [`Runtime`](devdb_core::runtime::Runtime) over namespaces, Jobs, volume
//!   snapshots and StatefulSets; [`resources`]: every object, as pure functions (validated
//!   against the official schemas); [`objects`]: apply, delete by label, poll; [`diagnose`]:
//!   why a pod is not running, so waits fail early with the platform's reason; [`isolation`]:
//!   whether NetworkPolicies are enforced; [`rollout`]: a StatefulSet brought to the template
//!   it should run, past a pod that never gets ready;
//! - [`backups`]: a database's WAL archived from its pod to S3, its stanza's key in a Secret, a
//!   backup a Job beside its pod;
//! - [`operator`]: the controllers and their scheduler; [`leader`]: the Lease only the holder
//!   of which runs them;
//! - [`config`]: flags and settings; [`preflight`]: the storage classes checked at start;
//!   [`key_guard`]: the password key checked against the one first used.

pub mod backups;
pub mod config;
pub mod crd;
pub mod diagnose;
pub mod isolation;
pub mod key_guard;
pub mod leader;
pub mod monitor;
pub mod objects;
pub mod operator;
pub mod preflight;
pub mod resources;
pub mod rollout;
pub mod runtime;
pub mod store;

pub use config::{KubeArgs, KubeConfig};
pub use runtime::{KubeRuntime, Waits};
pub use store::{CrdStore, Passwords};

/// The Kubernetes platform: custom resources and cluster objects.
pub struct KubePlatform;

impl devdb_core::runtime::Platform for KubePlatform {
    type Store = CrdStore;
    type Runtime = KubeRuntime;
}
