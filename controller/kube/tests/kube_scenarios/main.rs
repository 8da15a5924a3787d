//! The kube runtime against a scripted API server: for each scenario, the exact sequence of
//! requests the shared reconciler makes through the `Project`/`Database` store and the
//! [`KubeRuntime`](devdb_kube::KubeRuntime), with the objects it sends compared to the builders'
//! output. One binary, a module per topic; `common` is the harness (`sampling` runs the sampler
//! against the real proxy and PostgreSQL instead).

mod api;
mod backups;
mod blocked;
mod common;
mod databases;
mod documents;
mod key_guard;
mod leader;
mod major;
mod masking;
mod preflight;
mod readiness_gates;
mod recovery;
mod restore;
mod restore_identity;
mod routes;
mod sampling;
mod settings;
mod sleep;
