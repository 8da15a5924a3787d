//! The Kubernetes runtime (in progress): state as the custom resources [`crd::Project`] and
//! [`crd::Database`] (group `devdb.io`), so the controller is restartable and observable with
//! kubectl. The reconciler against the API server comes next; the types and their CRD manifests
//! are here now.

pub mod crd;
pub mod resources;
