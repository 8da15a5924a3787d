//! The few ways the kube runtime touches objects: server-side apply under one field manager,
//! deletion by label selector (NotFound counts as done), and polling until something is ready.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use devdb_core::runtime::RuntimeError;
use devdb_core::store::StoreError;

/// A cluster API failure as the core's errors carry it.
pub trait KubeResult<T> {
    /// As a runtime failure of the platform.
    fn platform(self) -> Result<T, RuntimeError>;
    /// As a failure of the store's backend.
    fn backend(self) -> Result<T, StoreError>;
}

impl<T> KubeResult<T> for Result<T, kube::Error> {
    fn platform(self) -> Result<T, RuntimeError> {
        self.map_err(|e| RuntimeError::Platform(Box::new(e)))
    }

    fn backend(self) -> Result<T, StoreError> {
        self.map_err(StoreError::backend)
    }
}

/// The field manager of everything the controller applies.
pub const FIELD_MANAGER: &str = "devdb-controller";

/// Creates or updates `object` (server-side apply, taking over conflicting fields).
///
/// # Errors
/// When the API server refuses it.
pub async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, RuntimeError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await.platform()
}

/// Deletes `name` if it exists.
///
/// # Errors
/// When the API server refuses it.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), RuntimeError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(RuntimeError::Platform(Box::new(e))),
    }
}

/// Deletes every `K` in any namespace carrying the labels of `selector`: what the controller
/// made is found by its labels, never by names derived again. Returns the namespaces they
/// were in.
///
/// # Errors
/// When the API server refuses the list or a delete.
pub async fn delete_labelled<K>(client: &Client, selector: &str) -> Result<BTreeSet<String>, RuntimeError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let found = Api::<K>::all(client.clone()).list(&ListParams::default().labels(selector)).await.platform()?;
    let mut namespaces = BTreeSet::new();
    for object in &found.items {
        let namespace = object.namespace().unwrap_or_default();
        delete(&Api::<K>::namespaced(client.clone(), &namespace), &object.name_any()).await?;
        namespaces.insert(namespace);
    }
    Ok(namespaces)
}

/// A wait with a time limit: look, and if not done, [`Wait::next`] before looking again.
pub struct Wait {
    step: &'static str,
    every: Duration,
    limit: Duration,
    deadline: tokio::time::Instant,
}

impl Wait {
    pub fn new(step: &'static str, every: Duration, limit: Duration) -> Self {
        Self { step, every, limit, deadline: tokio::time::Instant::now() + limit }
    }

    /// Sleeps until the next look.
    ///
    /// # Errors
    /// [`RuntimeError::Step`] named after the step once the time is up.
    pub async fn next(&self) -> Result<(), RuntimeError> {
        if tokio::time::Instant::now() >= self.deadline {
            let detail = format!("not done after {}", humantime::format_duration(self.limit));
            return Err(RuntimeError::Step { step: self.step, detail });
        }
        tokio::time::sleep(self.every).await;
        Ok(())
    }
}

/// Deletes every object of `api` matching `params`; none at all is fine too.
///
/// # Errors
/// When the API server refuses.
pub async fn delete_matching<K>(api: &Api<K>, params: &ListParams) -> Result<(), RuntimeError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete_collection(&DeleteParams::background(), params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(RuntimeError::Platform(Box::new(e))),
    }
}

/// Bytes in a Kubernetes quantity such as `20Gi`, `1500M` or `1073741824` (0 when unreadable:
/// it is only reported).
pub fn quantity_bytes(quantity: &str) -> u64 {
    let digits = quantity.find(|c: char| !c.is_ascii_digit()).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(digits);
    let Ok(number) = number.parse::<u64>() else { return 0 };
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return 0,
    };
    number.saturating_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("20Gi"), 20 << 30);
        assert_eq!(quantity_bytes("1500M"), 1_500_000_000);
        assert_eq!(quantity_bytes("1073741824"), 1 << 30);
        assert_eq!(quantity_bytes("1.5Gi"), 0, "fractions are not reported");
        assert_eq!(quantity_bytes(""), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_with_the_step_named() {
        let wait = Wait::new("the restore", Duration::from_secs(1), Duration::from_secs(5));
        let mut looks = 1;
        let error = loop {
            match wait.next().await {
                Ok(()) => looks += 1,
                Err(e) => break e.to_string(),
            }
        };
        assert!(error.starts_with("the restore failed: not done after 5s"), "{error}");
        assert_eq!(looks, 6);
    }
}
