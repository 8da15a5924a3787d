//! The kube runtime's state: each project and database is a custom resource (`Project`,
//! `Database`, group `devdb.io`), so the controller is stateless and restartable, and `kubectl
//! get projects,databases` shows what it knows.
//!
//! How records map onto resources:
//! - intent lives in the spec (`snapshotGeneration` for refresh, `resetGeneration` for reset);
//!   a deletion is the resource's own deletion, held by the finalizer [`FINALIZER`] until the
//!   reconciler has removed what the object had, then released by [`CrdStore::delete_database`]
//!   or [`CrdStore::project_cleaned`];
//! - what the controller observed lives in the status, with conditions, and every phase change
//!   is also an Event on the resource;
//! - no secret is stored in a resource: passwords are derived from the controller's secret key
//!   and the resource's uid ([`Passwords`]), so a recreated database gets new credentials;
//! - writes carry the `resourceVersion` they were computed from, and are recomputed on conflict.

use std::collections::BTreeMap;

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus as Phase, Progress, ProjectStatus as ProjectPhase};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use devdb_core::model::{DatabaseRecord, Lifecycle, ProjectRecord, SnapshotRecord, Want};
use devdb_core::store::{DatabaseFeed, Databases, Store, StoreError};

use crate::crd::{
    self, Condition, Database, DatabaseSpec, FINALIZER, Project, ProjectSpec, RestoreProgress, SnapshotStatus,
};
use crate::objects::KubeResult;

/// Attempts at a write that keeps conflicting with others before giving up.
const ATTEMPTS: usize = 5;

/// The label on `Database` resources naming their project (list filters use it).
const PROJECT_LABEL: &str = "devdb.io/project";

/// Derives credentials from the controller's secret key, so none is stored in a resource.
#[derive(Clone)]
pub struct Passwords(ring::hmac::Key);

impl Passwords {
    /// `key`: the controller's secret (the chart generates one and keeps it in a Secret).
    pub fn new(key: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// 24 characters of [A-Za-z0-9] from HMAC-SHA256(key, kind/name/uid): a new object (new
    /// uid) gets a new password; the same object always the same one. (Each byte mod 62 is
    /// slightly biased; 24 of them still carry over 140 bits.)
    pub fn password(&self, kind: &str, name: &str, uid: &str) -> String {
        const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let tag = ring::hmac::sign(&self.0, format!("{kind}\0{name}\0{uid}").as_bytes());
        tag.as_ref().iter().take(24).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
    }

    /// A project's masking key: 48 characters, derived like its password (so it is stored
    /// nowhere, and a project made again under the same name gets a new one), one per version
    /// (a rotation bumps it).
    pub fn mask_key(&self, project: &str, uid: &str, version: u32) -> String {
        let (first, second) = match version {
            0 => ("mask-key".to_string(), "mask-key-2".to_string()),
            v => (format!("mask-key-v{v}"), format!("mask-key-v{v}-2")),
        };
        self.password(&first, project, uid) + &self.password(&second, project, uid)
    }
}

/// Projects and databases as custom resources.
#[derive(Clone)]
pub struct CrdStore {
    projects: Api<Project>,
    databases: Api<Database>,
    /// [`Store::document`]s, as ConfigMaps in the controller's namespace.
    documents: Api<ConfigMap>,
    passwords: Passwords,
    recorder: Recorder,
    /// What [`CrdStore::follow_databases`] saw last.
    feed: std::sync::Arc<DatabaseFeed>,
}

/// The ConfigMap key a [`Store::document`] is kept under.
const DOCUMENT_KEY: &str = "document.json";

/// The ConfigMap of document `key` (`history/3f2a…` is `devdb-doc.history.3f2a…`).
/// The label naming a document's group (its key's first segment), for [`Store::documents`].
const DOCUMENT_GROUP: &str = "devdb.dev/document-group";

fn document_map(key: &str) -> String {
    format!("devdb-doc.{}", key.replace('/', "."))
}

impl CrdStore {
    /// `namespace`: the controller's own, where its documents are kept. `reporter`: this
    /// controller replica, as Events name it.
    pub fn new(client: Client, namespace: &str, passwords: Passwords, reporter: Reporter) -> Self {
        Self {
            projects: Api::all(client.clone()),
            databases: Api::all(client.clone()),
            documents: Api::namespaced(client.clone(), namespace),
            passwords,
            recorder: Recorder::new(client, reporter),
            feed: std::sync::Arc::default(),
        }
    }

    pub(crate) async fn insert_project(&self, p: &ProjectRecord) -> Result<ProjectRecord, StoreError> {
        let mut resource = Project::new(
            p.name.as_str(),
            ProjectSpec {
                owner: p.owner.clone(),
                db_version: p.db_version.clone(),
                backup_location: p.backup_location.clone(),
                allow_private_source: p.allow_private_source,
                username: p.username.clone(),
                database: p.database.clone(),
                snapshot_generation: p.wanted_generation,
                idle_stop_after_seconds: p.idle_stop_after_secs,
                default_ttl_seconds: p.default_ttl_secs,
                masking: p.masking.clone(),
            },
        );
        resource.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let created = create(&self.projects, &resource, "project").await?;
        self.project_record(&created)
    }

    pub(crate) async fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        let found = match Name::new(name_or_id) {
            Ok(name) => self.projects.get_opt(name.as_str()).await.backend()?,
            Err(_) => None,
        };
        let found = match found {
            Some(p) => Some(p),
            // Not a name: perhaps an id (the compatibility API accepts either).
            None => self
                .projects
                .list(&ListParams::default())
                .await
                .backend()?
                .items
                .into_iter()
                .find(|p| p.uid().as_deref() == Some(name_or_id)),
        };
        found.filter(|p| p.meta().deletion_timestamp.is_none()).map(|p| self.project_record(&p)).transpose()
    }

    pub(crate) async fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        let mut records = self
            .projects
            .list(&ListParams::default())
            .await
            .backend()?
            .items
            .iter()
            .filter(|p| p.meta().deletion_timestamp.is_none() && owner.is_none_or(|o| p.spec.owner == o))
            .map(|p| self.project_record(p))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    pub(crate) async fn update_project(
        &self,
        name: &Name,
        mut f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> Result<ProjectRecord, StoreError> {
        let not_found = || StoreError::NotFound { kind: "project", name: name.to_string() };
        for _ in 0..ATTEMPTS {
            let current = self.projects.get_opt(name.as_str()).await.backend()?.ok_or_else(not_found)?;
            if current.meta().deletion_timestamp.is_some() {
                return Err(not_found());
            }
            let before = self.project_record(&current)?;
            let mut after = before.clone();
            f(&mut after);
            let mut version = current.resource_version();
            if after.wanted_generation != before.wanted_generation || after.masking != before.masking {
                // A merge patch: every field of the masking is spelled out, or a false one
                // (left out when serialized) would keep its old value.
                let masking = &after.masking;
                let masking = (!masking.is_empty()).then(|| {
                    json!({ "rules": masking.rules, "requireRules": masking.require_rules, "verify": masking.verify })
                });
                let patch = json!({
                    "metadata": { "resourceVersion": version },
                    "spec": { "snapshotGeneration": after.wanted_generation, "masking": masking },
                });
                match patch_unchanged(&self.projects, name.as_str(), Part::Spec, &patch).await? {
                    Some(updated) => version = updated.resource_version(),
                    None => continue,
                }
            }
            let status = project_status(&after, current.status.as_ref());
            if Some(&status) != current.status.as_ref() {
                let status = replacing(current.status.as_ref(), &status);
                let patch = json!({ "metadata": { "resourceVersion": version }, "status": status });
                if patch_unchanged(&self.projects, name.as_str(), Part::Status, &patch).await?.is_none() {
                    continue;
                }
                if after.status != before.status {
                    self.announce(&current, project_event(&after)).await;
                }
            }
            return Ok(after);
        }
        Err(StoreError::Contended { kind: "project", name: name.to_string() })
    }

    pub(crate) async fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        let selector = format!("{PROJECT_LABEL}={name}");
        if let Some(database) =
            self.databases.list(&ListParams::default().labels(&selector).limit(1)).await.backend()?.items.first()
        {
            return Err(StoreError::Exists { kind: "database", name: database.name_any() });
        }
        // The finalizer holds the resource until the reconciler has cleaned up.
        match self.projects.delete(name.as_str(), &DeleteParams::default()).await {
            Err(e) if is(&e, kube::core::Status::is_not_found) => Ok(()),
            other => other.map(|_| ()).backend(),
        }
    }

    pub(crate) async fn project_cleaned(&self, name: &Name) -> Result<(), StoreError> {
        release(&self.projects, name).await
    }

    pub(crate) async fn insert_database(&self, d: &DatabaseRecord) -> Result<DatabaseRecord, StoreError> {
        if self.project(d.project.as_str()).await?.is_none() {
            return Err(StoreError::NotFound { kind: "project", name: d.project.to_string() });
        }
        let resource = Database {
            metadata: ObjectMeta {
                name: Some(d.name.to_string()),
                labels: Some(BTreeMap::from([(PROJECT_LABEL.into(), d.project.to_string())])),
                finalizers: Some(vec![FINALIZER.into()]),
                ..ObjectMeta::default()
            },
            spec: DatabaseSpec {
                project: d.project.to_string(),
                owner: d.owner.clone(),
                reset_generation: 0,
                stopped: false,
                protected: d.lifecycle.protected,
                expires_at: d.lifecycle.expires_at.clone(),
                idle_stop_after_seconds: d.lifecycle.idle_stop_after_secs,
                settings: d.settings.wanted.clone(),
                backup: d.backup.as_ref().map(backup_spec),
            },
            status: None,
        };
        let created = create(&self.databases, &resource, "database").await?;
        self.database_record(&created)
    }

    pub(crate) async fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        if Name::new(name).is_err() {
            return Ok(None);
        }
        self.databases.get_opt(name).await.backend()?.map(|d| self.database_record(&d)).transpose()
    }

    pub(crate) async fn databases(
        &self,
        owner: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<DatabaseRecord>, StoreError> {
        let params = match project {
            Some(project) => ListParams::default().labels(&format!("{PROJECT_LABEL}={project}")),
            None => ListParams::default(),
        };
        let mut records = self
            .databases
            .list(&params)
            .await
            .backend()?
            .items
            .iter()
            .filter(|d| owner.is_none_or(|o| d.spec.owner == o))
            .map(|d| self.database_record(d))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    pub(crate) async fn update_database(
        &self,
        name: &Name,
        mut f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> Result<DatabaseRecord, StoreError> {
        for _ in 0..ATTEMPTS {
            let current = self
                .databases
                .get_opt(name.as_str())
                .await
                .backend()?
                .ok_or_else(|| StoreError::NotFound { kind: "database", name: name.to_string() })?;
            let before = self.database_record(&current)?;
            let mut after = before.clone();
            f(&mut after);
            let mut version = current.resource_version();
            if after.want == Want::Reset && before.want == Want::Run {
                let patch = json!({
                    "metadata": { "resourceVersion": version },
                    "spec": { "resetGeneration": current.spec.reset_generation + 1 },
                });
                match patch_unchanged(&self.databases, name.as_str(), Part::Spec, &patch).await? {
                    Some(updated) => version = updated.resource_version(),
                    None => continue,
                }
            }
            // Intent that lives in the spec: stop, protection, expiry, idle period.
            let (mut spec, mut was) = (lifecycle_spec(&after), lifecycle_spec(&before));
            if before.backup.is_none() && after.backup.is_none() {
                for spec in [&mut spec, &mut was] {
                    spec.as_object_mut().map(|spec| spec.remove("backup"));
                }
            }
            if spec != was {
                // A merge patch removes a parameter by naming it with null.
                for removed in before.settings.wanted.keys().filter(|k| !after.settings.wanted.contains_key(*k)) {
                    spec["settings"][removed] = serde_json::Value::Null;
                }
                let patch = json!({ "metadata": { "resourceVersion": version }, "spec": spec });
                match patch_unchanged(&self.databases, name.as_str(), Part::Spec, &patch).await? {
                    Some(updated) => version = updated.resource_version(),
                    None => continue,
                }
            }
            let status = database_status(&after, &current);
            if Some(&status) != current.status.as_ref() {
                let status = replacing(current.status.as_ref(), &status);
                let patch = json!({ "metadata": { "resourceVersion": version }, "status": status });
                if patch_unchanged(&self.databases, name.as_str(), Part::Status, &patch).await?.is_none() {
                    continue;
                }
                if after.status != before.status {
                    self.announce(&current, database_event(&after)).await;
                }
            }
            if after.want == Want::Delete && before.want != Want::Delete {
                // Held by the finalizer until the reconciler has removed the instance.
                match self.databases.delete(name.as_str(), &DeleteParams::default()).await {
                    Err(e) if !is(&e, kube::core::Status::is_not_found) => return Err(StoreError::backend(e)),
                    _ => {}
                }
            }
            return Ok(after);
        }
        Err(StoreError::Contended { kind: "database", name: name.to_string() })
    }

    pub(crate) async fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        release(&self.databases, name).await
    }

    /// Publishes what the `Database` resources say ([`Store::watch_databases`]) after every
    /// change, until the watch ends (never, in practice: it reconnects with backoff). Runs on
    /// every replica, leader or not, from a cache: no request per change.
    pub async fn follow_databases(&self) {
        use kube::runtime::WatchStreamExt as _;
        let (reader, writer) = kube::runtime::reflector::store::<Database>();
        let events = kube::runtime::reflector(writer, watcher(self.databases.clone(), watcher::Config::default()))
            .default_backoff();
        futures_util::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "watching databases");
                    continue;
                }
            }
            let mut records: Vec<DatabaseRecord> =
                reader.state().iter().filter_map(|d| self.database_record(d).ok()).collect();
            records.sort_by(|a, b| a.name.cmp(&b.name));
            self.feed.publish(records);
        }
    }

    fn project_record(&self, p: &Project) -> Result<ProjectRecord, StoreError> {
        let name = resource_name(p)?;
        let id = p.uid().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        Ok(ProjectRecord {
            password: self.passwords.password("project", name.as_str(), &id),
            mask_key: self.passwords.mask_key(name.as_str(), &id, p.spec.masking.key_version),
            id,
            name,
            owner: p.spec.owner.clone(),
            db_version: p.spec.db_version.clone(),
            backup_location: p.spec.backup_location.clone(),
            allow_private_source: p.spec.allow_private_source,
            status: phase(status.phase.as_deref()).unwrap_or(ProjectPhase::Pending),
            error: status.error,
            progress: status.progress.map(|p| Progress { bytes_done: p.bytes_done, bytes_total: p.bytes_total }),
            snapshot: status.snapshot.map(snapshot_record),
            kept_snapshots: status.kept_snapshots.into_iter().map(snapshot_record).collect(),
            wanted_generation: p.spec.snapshot_generation,
            username: p.spec.username.clone(),
            database: p.spec.database.clone(),
            created_at: created_at(p.meta()),
            idle_stop_after_secs: p.spec.idle_stop_after_seconds,
            default_ttl_secs: p.spec.default_ttl_seconds,
            masking: p.spec.masking.clone(),
            // A restore runs in its Job, apart from the controller: a restarted controller takes
            // the same Job up again.
            restores_begun: 0,
            // Backups need the local runtime for now: a project's default here is off.
            backup: None,
        })
    }

    fn database_record(&self, d: &Database) -> Result<DatabaseRecord, StoreError> {
        let name = resource_name(d)?;
        let project = Name::new(&d.spec.project).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = d.uid().unwrap_or_default();
        let status = d.status.clone().unwrap_or_default();
        let want = if d.meta().deletion_timestamp.is_some() {
            Want::Delete
        } else if d.spec.reset_generation > status.observed_reset_generation {
            Want::Reset
        } else if d.spec.stopped {
            Want::Stop
        } else {
            Want::Run
        };
        Ok(DatabaseRecord {
            password: self.passwords.password("database", name.as_str(), &id),
            id,
            name,
            project,
            owner: d.spec.owner.clone(),
            status: phase(status.phase.as_deref()).unwrap_or(Phase::Creating),
            want,
            port: 5432,
            snapshot_generation: status.snapshot_generation,
            error: status.error,
            created_at: created_at(d.meta()),
            lifecycle: Lifecycle {
                stop_reason: status.stop_reason.as_deref().and_then(|r| phase(Some(r))),
                stopped_at: status.stopped_at,
                last_active_at: status.last_active_at,
                expires_at: d.spec.expires_at.clone(),
                protected: d.spec.protected,
                idle_stop_after_secs: d.spec.idle_stop_after_seconds,
            },
            settings: devdb_core::model::Settings {
                wanted: d.spec.settings.clone(),
                applied: status.applied_settings.clone(),
                archiving: status.archiving,
            },
            // Asked for in the spec, observed in the status.
            backup: d.spec.backup.as_ref().map(|asked| devdb_shared::api::BackupStatus {
                enabled: true,
                schedule: asked.schedule.clone(),
                retention: asked.retention.clone(),
                ..status.backup.clone().unwrap_or_default()
            }),
            restore_from: None,
            restoring: None,
            before_restore: None,
        })
    }

    /// Publishes an Event on `resource`; a failure is logged, never fatal.
    async fn announce(&self, resource: &impl Resource<DynamicType = ()>, event: Event) {
        if let Err(error) = self.recorder.publish(&event, &resource.object_ref(&())).await {
            tracing::warn!(%error, reason = %event.reason, "cannot publish an event");
        }
    }
}

/// Which part of a resource a patch writes.
enum Part {
    Spec,
    Status,
}

/// A merge patch carrying the resourceVersion it was computed from: `Ok(None)` when another
/// write came first (recompute and try again).
async fn patch_unchanged<K>(
    api: &Api<K>,
    name: &str,
    part: Part,
    patch: &serde_json::Value,
) -> Result<Option<K>, StoreError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::default();
    let written = match part {
        Part::Spec => api.patch(name, &params, &Patch::Merge(patch)).await,
        Part::Status => api.patch_status(name, &params, &Patch::Merge(patch)).await,
    };
    match written {
        Ok(updated) => Ok(Some(updated)),
        Err(e) if is(&e, kube::core::Status::is_conflict) => Ok(None),
        Err(e) => Err(StoreError::backend(e)),
    }
}

/// `new` as a merge patch of `old`: what `new` leaves out (an absent error, an empty list) is
/// named with null, so the patched object equals `new` instead of keeping `old`'s value.
fn replacing<T: serde::Serialize>(old: Option<&T>, new: &T) -> serde_json::Value {
    fn patch(old: &serde_json::Value, new: serde_json::Value) -> serde_json::Value {
        match (old, new) {
            (serde_json::Value::Object(old), serde_json::Value::Object(mut new)) => {
                for (key, value) in old {
                    match new.remove(key) {
                        Some(replacement) => {
                            new.insert(key.clone(), patch(value, replacement));
                        }
                        None => {
                            new.insert(key.clone(), serde_json::Value::Null);
                        }
                    }
                }
                serde_json::Value::Object(new)
            }
            (_, new) => new,
        }
    }
    let new = serde_json::to_value(new).unwrap_or_default();
    match old.and_then(|old| serde_json::to_value(old).ok()) {
        Some(old) => patch(&old, new),
        None => new,
    }
}

/// Creates `resource`; a taken name is [`StoreError::Exists`].
async fn create<K>(api: &Api<K>, resource: &K, kind: &'static str) -> Result<K, StoreError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), resource).await.map_err(|e| {
        if is(&e, kube::core::Status::is_already_exists) {
            StoreError::Exists { kind, name: resource.meta().name.clone().unwrap_or_default() }
        } else {
            StoreError::backend(e)
        }
    })
}

fn is(error: &kube::Error, check: fn(&kube::core::Status) -> bool) -> bool {
    matches!(error, kube::Error::Api(status) if check(status))
}

fn resource_name(r: &impl Resource) -> Result<Name, StoreError> {
    let name = r.meta().name.clone().unwrap_or_default();
    Name::new(&name).map_err(|e| StoreError::Invalid(format!("{name:?}: {e}")))
}

fn created_at(meta: &ObjectMeta) -> String {
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
}

/// A phase as the API spells it (`"ready"`) back into its enum.
fn phase<T: serde::de::DeserializeOwned>(phase: Option<&str>) -> Option<T> {
    phase.and_then(|p| serde_json::from_value(json!(p)).ok())
}

fn phase_name(phase: &impl serde::Serialize) -> String {
    serde_json::to_value(phase).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// A Ready condition for `ready`, keeping the previous transition time when unchanged.
fn ready_condition(ready: bool, reason: &str, message: Option<&String>, previous: &[Condition]) -> Condition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(k8s_openapi::jiff::Timestamp::now().to_string()));
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: message.cloned(),
        last_transition_time,
    }
}

fn snapshot_record(s: SnapshotStatus) -> SnapshotRecord {
    SnapshotRecord {
        generation: s.generation,
        created_at: s.created_at,
        size_bytes: s.size_bytes,
        findings: s.findings,
        unlisted_findings: s.unlisted_findings,
        unlisted_unmasked: s.unlisted_unmasked,
        masked_with: s.masked_with,
        masked_key_version: s.masked_key_version,
        masking_verified: s.masking_verified,
    }
}

fn snapshot_status(s: &SnapshotRecord) -> SnapshotStatus {
    SnapshotStatus {
        generation: s.generation,
        created_at: s.created_at.clone(),
        size_bytes: s.size_bytes,
        findings: s.findings.clone(),
        unlisted_findings: s.unlisted_findings,
        unlisted_unmasked: s.unlisted_unmasked,
        masked_with: s.masked_with.clone(),
        masked_key_version: s.masked_key_version,
        masking_verified: s.masking_verified,
    }
}

fn project_status(p: &ProjectRecord, previous: Option<&crd::ProjectStatus>) -> crd::ProjectStatus {
    let previous = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let reason = match p.status {
        ProjectPhase::Pending => "Pending",
        ProjectPhase::Restoring => "Restoring",
        ProjectPhase::Ready => "SnapshotReady",
        ProjectPhase::Failed => "RestoreFailed",
    };
    crd::ProjectStatus {
        phase: Some(phase_name(&p.status)),
        error: p.error.clone(),
        progress: p.progress.map(|p| RestoreProgress { bytes_done: p.bytes_done, bytes_total: p.bytes_total }),
        snapshot: p.snapshot.as_ref().map(snapshot_status),
        kept_snapshots: p.kept_snapshots.iter().map(snapshot_status).collect(),
        conditions: vec![ready_condition(p.status == ProjectPhase::Ready, reason, p.error.as_ref(), previous)],
    }
}

fn database_status(d: &DatabaseRecord, current: &Database) -> crd::DatabaseStatus {
    let previous = current.status.clone().unwrap_or_default();
    let reason = match d.status {
        Phase::Creating => "Cloning",
        Phase::Running => "Running",
        Phase::Recovering => "Recovering",
        Phase::Stopped => "Stopped",
        Phase::Starting => "Starting",
        Phase::Error => "Failed",
        Phase::Deleting => "Deleting",
    };
    crd::DatabaseStatus {
        phase: Some(phase_name(&d.status)),
        error: d.error.clone(),
        // A reset is done when the record no longer wants one.
        observed_reset_generation: if d.want == Want::Reset {
            previous.observed_reset_generation
        } else {
            current.spec.reset_generation
        },
        snapshot_generation: d.snapshot_generation,
        stop_reason: d.lifecycle.stop_reason.map(|r| phase_name(&r)),
        stopped_at: d.lifecycle.stopped_at.clone(),
        last_active_at: d.lifecycle.last_active_at.clone(),
        applied_settings: d.settings.applied.clone(),
        archiving: d.settings.archiving,
        // Observations only: what was asked for is in the spec.
        backup: d.backup.clone().map(|b| devdb_shared::api::BackupStatus { schedule: None, retention: None, ..b }),
        conditions: vec![ready_condition(d.status == Phase::Running, reason, d.error.as_ref(), &previous.conditions)],
    }
}

fn event(failed: bool, reason: &str, action: &str, note: Option<String>) -> Event {
    Event {
        type_: if failed { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note,
        action: action.into(),
        secondary: None,
    }
}

fn project_event(p: &ProjectRecord) -> Event {
    match p.status {
        ProjectPhase::Pending => event(false, "Pending", "Restore", None),
        ProjectPhase::Restoring => {
            event(false, "Restoring", "Restore", p.backup_location.as_deref().map(devdb_shared::source::display))
        }
        ProjectPhase::Ready => event(
            p.error.is_some(),
            if p.error.is_some() { "RefreshFailed" } else { "SnapshotReady" },
            "Restore",
            p.error.clone().or_else(|| p.snapshot.as_ref().map(|s| format!("snapshot generation {}", s.generation))),
        ),
        ProjectPhase::Failed => event(true, "RestoreFailed", "Restore", p.error.clone()),
    }
}

fn database_event(d: &DatabaseRecord) -> Event {
    match d.status {
        Phase::Creating => event(false, "Cloning", "Clone", None),
        Phase::Running => event(false, "Running", "Clone", None),
        Phase::Recovering => event(true, "Recovering", "Restart", d.error.clone()),
        Phase::Stopped => {
            event(false, "Stopped", "Stop", d.lifecycle.stop_reason.map(|r| format!("stopped ({})", phase_name(&r))))
        }
        Phase::Starting => event(false, "Starting", "Start", None),
        Phase::Error => event(true, "Failed", "Clone", d.error.clone()),
        Phase::Deleting => event(false, "Deleting", "Delete", None),
    }
}

/// The lifecycle intent a `Database`'s spec holds, as a merge patch of the spec (nulls remove).
fn lifecycle_spec(d: &DatabaseRecord) -> serde_json::Value {
    let mut spec = json!({
        "stopped": d.want == Want::Stop,
        "protected": d.lifecycle.protected,
        "expiresAt": d.lifecycle.expires_at,
        "idleStopAfterSeconds": d.lifecycle.idle_stop_after_secs,
        "settings": d.settings.wanted,
    });
    // Left out by the caller where backups neither were nor are asked for (null turns them off).
    spec["backup"] = json!(d.backup.as_ref().map(backup_spec));
    spec
}

/// The backups asked for of a database, as its spec keeps them.
fn backup_spec(backup: &devdb_shared::api::BackupStatus) -> crd::BackupSpec {
    crd::BackupSpec { schedule: backup.schedule.clone(), retention: backup.retention.clone() }
}

/// Removes our finalizer from a resource being deleted, letting it go.
async fn release<K>(api: &Api<K>, name: &Name) -> Result<(), StoreError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(current) = api.get_opt(name.as_str()).await.backend()? else { return Ok(()) };
    let finalizers = current.finalizers();
    if current.meta().deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({ "metadata": { "resourceVersion": current.resource_version(), "finalizers": rest } });
    match api.patch(name.as_str(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(e) if is(&e, kube::core::Status::is_not_found) => Ok(()),
        other => other.map(|_| ()).backend(),
    }
}

impl Store for CrdStore {
    async fn insert_project(&self, p: &ProjectRecord) -> Result<ProjectRecord, StoreError> {
        CrdStore::insert_project(self, p).await
    }

    async fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        CrdStore::project(self, name_or_id).await
    }

    async fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        CrdStore::projects(self, owner).await
    }

    async fn update_project(
        &self,
        name: &Name,
        f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> Result<ProjectRecord, StoreError> {
        CrdStore::update_project(self, name, f).await
    }

    async fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        CrdStore::delete_project(self, name).await
    }

    async fn project_cleaned(&self, name: &Name) -> Result<(), StoreError> {
        CrdStore::project_cleaned(self, name).await
    }

    async fn insert_database(&self, d: &DatabaseRecord) -> Result<DatabaseRecord, StoreError> {
        CrdStore::insert_database(self, d).await
    }

    async fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        CrdStore::database(self, name).await
    }

    async fn databases(&self, owner: Option<&str>, project: Option<&str>) -> Result<Vec<DatabaseRecord>, StoreError> {
        CrdStore::databases(self, owner, project).await
    }

    async fn update_database(
        &self,
        name: &Name,
        f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> Result<DatabaseRecord, StoreError> {
        CrdStore::update_database(self, name, f).await
    }

    async fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        CrdStore::delete_database(self, name).await
    }

    fn watch_databases(&self) -> tokio::sync::watch::Receiver<Databases> {
        self.feed.subscribe()
    }

    async fn document(&self, key: &str) -> Result<Option<String>, StoreError> {
        let map = self.documents.get_opt(&document_map(key)).await.backend()?;
        Ok(map.and_then(|m| m.data).and_then(|mut d| d.remove(DOCUMENT_KEY)))
    }

    async fn put_document(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": document_map(key),
                "labels": {
                    "app.kubernetes.io/managed-by": "devdb",
                    "devdb.dev/document": "true",
                    DOCUMENT_GROUP: key.split('/').next().unwrap_or_default(),
                },
            },
            "data": { DOCUMENT_KEY: value },
        });
        let params = PatchParams::apply("devdb-controller").force();
        self.documents.patch(&document_map(key), &params, &Patch::Apply(map)).await.map(drop).backend()
    }

    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let selector = format!("{DOCUMENT_GROUP}={prefix}");
        let maps = self.documents.list(&ListParams::default().labels(&selector)).await.backend()?;
        Ok(maps
            .items
            .into_iter()
            .filter_map(|m| {
                let key = m.metadata.name.as_deref()?.strip_prefix("devdb-doc.")?.replace('.', "/");
                let value = m.data?.remove(DOCUMENT_KEY)?;
                key.starts_with(&format!("{prefix}/")).then_some((key, value))
            })
            .collect())
    }

    async fn delete_document(&self, key: &str) -> Result<(), StoreError> {
        match self.documents.delete(&document_map(key), &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            other => other.map(drop).backend(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_stable_per_object_and_differ_between_incarnations() {
        let passwords = Passwords::new(b"a secret key of the controller");
        let first = passwords.password("database", "kate-pg", "uid-1");
        assert_eq!(first.len(), 24);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()), "{first}");
        assert_eq!(first, passwords.password("database", "kate-pg", "uid-1"));
        assert_ne!(first, passwords.password("database", "kate-pg", "uid-2"), "recreated: new password");
        assert_ne!(first, passwords.password("project", "kate-pg", "uid-1"), "kinds differ");
        assert_ne!(first, Passwords::new(b"another key").password("database", "kate-pg", "uid-1"));
        let key = passwords.mask_key("shop", "uid-1", 0);
        assert_eq!(key.len(), 48);
        assert_eq!(key, passwords.mask_key("shop", "uid-1", 0), "stable");
        assert_ne!(key, passwords.mask_key("shop", "uid-1", 1), "a rotation gives another key");
    }

    #[test]
    fn phases_round_trip_through_their_api_names() {
        for p in [ProjectPhase::Pending, ProjectPhase::Restoring, ProjectPhase::Ready, ProjectPhase::Failed] {
            assert_eq!(phase::<ProjectPhase>(Some(&phase_name(&p))), Some(p));
        }
        assert_eq!(phase_name(&Phase::Running), "running");
        assert_eq!(phase::<Phase>(Some("nonsense")), None);
    }

    #[test]
    fn events_name_the_source_by_its_display_form() {
        let project = ProjectRecord {
            id: "id".into(),
            name: Name::new("shop").expect("name"),
            owner: "kate".into(),
            db_version: "16".into(),
            backup_location: Some("https://svc:hunter2@dumps.example.com/d.dump?sig=f00d".into()),
            allow_private_source: false,
            status: ProjectPhase::Restoring,
            error: None,
            progress: None,
            snapshot: None,
            kept_snapshots: Vec::new(),
            wanted_generation: 1,
            username: "app".into(),
            password: "pw".into(),
            database: "shop".into(),
            created_at: "now".into(),
            idle_stop_after_secs: None,
            default_ttl_secs: None,
            masking: devdb_shared::api::Masking::default(),
            mask_key: String::new(),
            restores_begun: 0,
            backup: None,
        };
        let note = project_event(&project).note.unwrap_or_default();
        assert_eq!(note, "https://dumps.example.com/d.dump?sig=…");
    }

    #[test]
    fn a_status_patch_names_what_the_new_status_leaves_out_with_null() {
        let old = serde_json::json!({
            "phase": "ready", "error": "the dump is gone",
            "snapshot": { "generation": 1, "maskedWith": [{"table": "t"}], "maskingVerified": 20 },
        });
        let new = serde_json::json!({ "phase": "ready", "snapshot": { "generation": 2 } });
        assert_eq!(
            replacing(Some(&old), &new),
            serde_json::json!({
                "phase": "ready", "error": null,
                "snapshot": { "generation": 2, "maskedWith": null, "maskingVerified": null },
            })
        );
        assert_eq!(replacing(None, &new), new, "nothing to replace");
    }
}
