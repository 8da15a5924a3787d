//! Guards the secret key passwords are derived from against being replaced. A new key gives
//! every database a new password at its next restart, silently; GitOps tools that render the
//! chart without a cluster (`helm template`) generate a new key on every sync. So the key's
//! fingerprint (derived from it one way, like a password) is kept in a ConfigMap the first
//! time, and a controller whose key does not match refuses to start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::store::Passwords;

/// The ConfigMap, in the controller's namespace.
pub const FINGERPRINTS: &str = "devdb-key-fingerprint";

/// Why the key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the secret key differs from the one this cluster's passwords were derived from (ConfigMap {FINGERPRINTS}): \
         every database would get a new password. Restore the previous key (the chart's <release>-controller-key \
         Secret; with GitOps, set controller.secretKeySecret to a Secret you manage), or, to change keys on purpose, \
         delete the ConfigMap and restart the databases"
    )]
    Changed,
    #[error("cannot check the secret key against ConfigMap {FINGERPRINTS}: {0}")]
    Api(#[source] kube::Error),
}

/// Records the key's fingerprint the first time; refuses a different key afterwards.
///
/// # Errors
/// [`KeyError::Changed`] for another key; [`KeyError::Api`] when the cluster cannot be asked.
pub async fn check(client: &Client, namespace: &str, passwords: &Passwords) -> Result<(), KeyError> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let fingerprint = passwords.password("fingerprint", "secret-key", "devdb");
    match api.get_opt(FINGERPRINTS).await.map_err(KeyError::Api)? {
        Some(existing) => {
            let recorded = existing.data.as_ref().and_then(|d| d.get("fingerprint"));
            if recorded == Some(&fingerprint) { Ok(()) } else { Err(KeyError::Changed) }
        }
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta { name: Some(FINGERPRINTS.into()), ..ObjectMeta::default() },
                data: Some(BTreeMap::from([("fingerprint".to_string(), fingerprint)])),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &map).await {
                Ok(_) => Ok(()),
                // Another replica recorded it first: compare with that.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    Box::pin(check(client, namespace, passwords)).await
                }
                Err(error) => Err(KeyError::Api(error)),
            }
        }
    }
}
