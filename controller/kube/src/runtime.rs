//! The Kubernetes [`Runtime`]: each project is a namespace `devdb-<project>` holding its
//! restored snapshots, each database a clone of one running as a one-pod StatefulSet behind a
//! ClusterIP Service.

use std::sync::Arc;
use std::time::Duration;

use devdb_restore::report::Report;
use devdb_shared::{Domain, Name};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};

use devdb_core::model::{DatabaseRecord, ProjectRecord, SnapshotRecord, Want};
use devdb_core::runtime::{ProgressFn, Runtime, RuntimeError};

use crate::diagnose::{self, Blocker, Patience, Problem};
use crate::isolation::Isolation;
use crate::objects::{KubeResult, Wait, apply, delete, delete_labelled, delete_matching, quantity_bytes};
use crate::resources::{self, ClusterSettings, RestoreOptions};
use crate::rollout;

/// How long each kind of wait may last, and how often it looks.
#[derive(Debug, Clone)]
pub struct Waits {
    pub every: Duration,
    /// Download and restore of a dump.
    pub restore: Duration,
    /// A VolumeSnapshot becoming ready to use (a volume's first EBS snapshot copies all of it).
    pub snapshot: Duration,
    /// A database pod answering its readiness query.
    pub ready: Duration,
    /// A database's volume going away before it is cloned again.
    pub release: Duration,
    /// How long a wait lets a pod stay blocked for one reason (unschedulable, image not
    /// pulled, volume not provisioned, crash loop, snapshot error) before failing with it.
    pub stuck: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(2),
            restore: Duration::from_secs(6 * 3600),
            snapshot: Duration::from_secs(12 * 3600),
            ready: Duration::from_secs(10 * 60),
            release: Duration::from_secs(5 * 60),
            stuck: Duration::from_secs(5 * 60),
        }
    }
}

/// Runs projects and databases as Kubernetes objects.
pub struct KubeRuntime {
    client: Client,
    settings: ClusterSettings,
    /// The PostgreSQL major version of the database image.
    db_version: u32,
    /// Connection strings in database Secrets point at the proxy: `<name>.<domain>:<port>`.
    domain: Domain,
    public_port: u16,
    waits: Waits,
    isolation: Isolation,
    /// How databases are sampled (`None`: they are not).
    monitor: Option<crate::monitor::ThroughProxy>,
    /// The databases' StatefulSets as a watch keeps them ([`KubeRuntime::watch_statefulsets`]),
    /// once it has listed them all; else each check lists them.
    statefulsets: Option<(kube::runtime::reflector::Store<StatefulSet>, Arc<std::sync::atomic::AtomicBool>)>,
    /// Where databases with backups archive (`None`: backups are off, and the API refuses them).
    backups: Option<crate::backups::BackupSettings>,
}

/// The label selector of every database's StatefulSet.
const DATABASE_SETS: &str = "app.kubernetes.io/managed-by=devdb,devdb.io/database";

/// The label selector of a database's objects.
fn database_selector(name: &str) -> String {
    format!("app.kubernetes.io/managed-by=devdb,devdb.io/database={name}")
}

impl KubeRuntime {
    pub fn new(
        client: Client,
        settings: ClusterSettings,
        db_version: u32,
        domain: Domain,
        public_port: u16,
        waits: Waits,
    ) -> Self {
        let isolation = Isolation::new(settings.require_network_policy);
        Self {
            client,
            settings,
            db_version,
            domain,
            public_port,
            waits,
            isolation,
            monitor: None,
            statefulsets: None,
            backups: None,
        }
    }

    /// Databases with backups archive to, and are backed up in, `backups`' repository.
    #[must_use]
    pub fn with_backups(mut self, backups: Option<crate::backups::BackupSettings>) -> Self {
        self.backups = backups;
        self
    }

    /// The StatefulSet `database` runs as: archiving its WAL where it has backups and this
    /// runtime a repository.
    fn statefulset(&self, database: &DatabaseRecord) -> StatefulSet {
        let (p, db) = (database.project.as_str(), database.name.as_str());
        let statefulset = resources::statefulset(p, db, &self.settings, &database.settings.wanted);
        match self.archiving(database) {
            Some(_) => crate::backups::with_archiving(statefulset, db),
            None => statefulset,
        }
    }

    /// What an archiving `database`'s pod needs before it starts: its project's account (one
    /// IRSA role serves every database) and its configuration Secret, owned by its resource.
    /// Applied wherever its StatefulSet is: backups may have been turned on since its clone.
    async fn backup_objects(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let Some(backups) = self.archiving(database) else { return Ok(()) };
        let (p, db) = (database.project.as_str(), database.name.as_str());
        let namespace = resources::namespace_name(p);
        // The clone's own stanza: its volume's (a reset makes a new one).
        let data = resources::data_name(db);
        let Some(volume) = self.api::<PersistentVolumeClaim>(&namespace).get_opt(&data).await.platform()? else {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        };
        let stanza = crate::backups::stanza_name(&database.id, &volume.uid().unwrap_or_default());
        let account = crate::backups::backup_account(p, &backups.account_annotations);
        apply(&self.api::<ServiceAccount>(&namespace), &account).await?;
        let days = database.backup.as_ref().and_then(devdb_core::backup_settings::kept_days);
        let retention = devdb_backup::Retention::kept(days);
        let mut config = crate::backups::config_secret(p, db, &stanza, retention, backups);
        resources::owned_by(&mut config.metadata, "Database", db, &database.id);
        apply(&self.api::<Secret>(&namespace), &config).await.map(drop)
    }

    /// This runtime's backup settings, if `database` archives with them.
    fn archiving(&self, database: &DatabaseRecord) -> Option<&crate::backups::BackupSettings> {
        self.backups.as_ref().filter(|_| database.backup.as_ref().is_some_and(|b| b.enabled))
    }

    /// Keeps the databases' StatefulSets from a watch, so checking which running databases died
    /// (every 2 s) costs no request; the future returned drives the watch and runs until dropped.
    pub fn watch_statefulsets(&mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        use futures_util::StreamExt as _;
        use kube::runtime::WatchStreamExt as _;
        let (reader, writer) = kube::runtime::reflector::store();
        let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.statefulsets = Some((reader, listed.clone()));
        let events = kube::runtime::watcher(
            Api::<StatefulSet>::all(self.client.clone()),
            kube::runtime::watcher::Config::default().labels(DATABASE_SETS),
        )
        .default_backoff()
        .reflect(writer);
        async move {
            futures_util::pin_mut!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(kube::runtime::watcher::Event::InitDone) => {
                        listed.store(true, std::sync::atomic::Ordering::Relaxed)
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "watching the databases' StatefulSets"),
                }
            }
        }
    }

    /// Whether the StatefulSet `name` of `namespace` had a ready pod when the watch last saw it
    /// (false when nothing is watched, or not listed yet).
    fn watched_ready(&self, namespace: &str, name: &str) -> bool {
        let Some((store, listed)) = &self.statefulsets else { return false };
        listed.load(std::sync::atomic::Ordering::Relaxed)
            && store
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
                .and_then(|sts| sts.status.as_ref().and_then(|s| s.ready_replicas))
                .is_some_and(|ready| ready >= 1)
    }

    /// Samples databases through the proxy (see [`crate::monitor`]).
    #[must_use]
    pub fn sampling_through(mut self, monitor: crate::monitor::ThroughProxy) -> Self {
        self.monitor = Some(monitor);
        self
    }

    fn api<K: kube::Resource<Scope = kube::core::NamespaceResourceScope>>(&self, namespace: &str) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn snapshots(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &resources::snapshot_resource())
    }

    /// The namespace, the restore's credentials and, for an `s3://` source, a copy of the
    /// source credentials (no other project's namespace holds one).
    async fn prepare_project(&self, project: &ProjectRecord) -> Result<String, RuntimeError> {
        let name = project.name.as_str();
        let namespace = resources::namespace_name(name);
        let mut ns = resources::namespace(name);
        resources::owned_by(&mut ns.metadata, "Project", name, &project.id);
        apply(&Api::<Namespace>::all(self.client.clone()), &ns).await?;
        if let Some(access) = &self.settings.project_access {
            // Until this binding takes effect the next writes may be refused: the pass is
            // retried (a platform error), and the restore adopts what it finds.
            let mut binding = resources::project_role_binding(name, access, &self.settings.controller_namespace);
            resources::owned_by(&mut binding.metadata, "Project", name, &project.id);
            apply(&self.api::<RoleBinding>(&namespace), &binding).await?;
        }
        let s3 = project.backup_location.as_deref().is_some_and(|l| l.starts_with("s3://"));
        if s3 {
            let account = resources::restore_account(name, &self.settings.restore_account_annotations);
            apply(&self.api::<ServiceAccount>(&namespace), &account).await?;
        }
        let secrets = self.api::<Secret>(&namespace);
        let secret =
            resources::project_secret(name, &project.username, &project.password, project.backup_location.as_deref());
        apply(&secrets, &secret).await?;
        if let Some(source) = self.settings.source_credentials.as_ref().filter(|_| s3) {
            let original = self.api::<Secret>(&self.settings.controller_namespace).get_opt(source).await.platform()?;
            let Some(original) = original else {
                return Err(RuntimeError::Step {
                    step: "reading the source credentials",
                    detail: format!("Secret {source} does not exist in {}", self.settings.controller_namespace),
                });
            };
            apply(&secrets, &resources::source_credentials(name, original.data)).await?;
        }
        Ok(namespace)
    }

    /// The pods of the restore Job `job`, but those of an attempt deleted before it.
    async fn job_pods(&self, namespace: &str, job: &str) -> Result<Vec<Pod>, RuntimeError> {
        let params = ListParams::default().labels(&format!("job-name={job}"));
        let pods = self.api::<Pod>(namespace).list(&params).await.platform()?.items;
        Ok(pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect())
    }

    /// The restore Job's termination message: its report on success (see
    /// [`devdb_restore::report`]), its one-line reason on failure.
    async fn termination_message(&self, namespace: &str, job: &Job) -> Result<Option<String>, RuntimeError> {
        Ok(termination_message(&self.job_pods(namespace, &job.name_any()).await?))
    }

    /// Whether a restore pod without an AWS identity injected cannot fetch its `s3://` source:
    /// no source credentials stand in for one.
    fn needs_injected_identity(&self, s3: bool) -> bool {
        s3 && self.settings.source_credentials.is_none()
    }

    /// What a finished restore Job reports: its scan's findings and its masking verification.
    /// A masked restore must report, having applied the project's rules (an image that does
    /// not know masking would have restored the originals; a Job started before the rules
    /// changed applied others) and verified when asked to.
    async fn restore_report(
        &self,
        namespace: &str,
        job: &Job,
        project: &ProjectRecord,
    ) -> Result<Report, RuntimeError> {
        let message = self.termination_message(namespace, job).await?.unwrap_or_default();
        let masking = &project.masking;
        let report = match Report::decode(&message) {
            Some(report) => report,
            None if !masking.rules.is_empty() => {
                return Err(RuntimeError::Source(
                    "the restore Job did not report its masking: is the database image older than the controller?"
                        .into(),
                ));
            }
            None => {
                tracing::warn!(namespace, "the restore Job reported no personal-data scan (an older database image?)");
                return Ok(Report::default());
            }
        };
        if !masking.rules.is_empty() {
            if report.masked_with.as_deref() != Some(devdb_restore::report::rules_digest(&masking.rules).as_str()) {
                return Err(RuntimeError::Source(
                    "the restore Job applied other masking rules than the project's (they changed while it ran): \
                     refresh the project"
                        .into(),
                ));
            }
            if masking.verify && report.verified.is_none() {
                return Err(RuntimeError::Source("the restore Job did not verify the masking it was asked to".into()));
            }
        }
        Ok(report)
    }

    /// Why the pods selected by `selector`, on volume `claim`, are not running, if something
    /// blocks them (see [`diagnose`]).
    async fn blocked(&self, namespace: &str, selector: &str, claim: &str) -> Result<Option<Problem>, RuntimeError> {
        let pods = self.api::<Pod>(namespace).list(&ListParams::default().labels(selector)).await.platform()?.items;
        self.problem_of(namespace, &pods, claim).await
    }

    /// Why `pods`, on volume `claim`, are not running, reading the namespace's warnings when
    /// their own status does not say.
    async fn problem_of(&self, namespace: &str, pods: &[Pod], claim: &str) -> Result<Option<Problem>, RuntimeError> {
        let events = if diagnose::needs_events(pods) {
            self.api::<Event>(namespace).list(&ListParams::default().fields("type=Warning")).await.platform()?.items
        } else {
            Vec::new()
        };
        Ok(diagnose::problem(pods, claim, &events))
    }

    /// One look at a database whose StatefulSet (`sts`) has not rolled or is not ready: a pod
    /// of a revision it no longer wants that is not ready is deleted (see [`crate::rollout`]),
    /// and what blocks the others, if anything, is returned.
    async fn look(
        &self,
        namespace: &str,
        database: &DatabaseRecord,
        sts: &StatefulSet,
    ) -> Result<Option<Problem>, RuntimeError> {
        let pods_api = self.api::<Pod>(namespace);
        let selector = resources::selector(database.project.as_str(), Some(database.name.as_str()));
        let pods = pods_api.list(&ListParams::default().labels(&selector)).await.platform()?.items;
        let (stale, current) = rollout::replace(sts, pods);
        for pod in &stale {
            let pod_name = pod.name_any();
            tracing::info!(database = %database.name, pod = %pod_name, "replacing an unready pod of an unwanted template");
            delete(&pods_api, &pod_name).await?;
        }
        if current.is_empty() && !stale.is_empty() {
            // Made again from the wanted template next.
            return Ok(None);
        }
        self.problem_of(namespace, &current, &resources::data_name(database.name.as_str())).await
    }

    /// Waits for the restore Job of `generation` (a masked one's Secret goes as soon as it
    /// ends), then for the VolumeSnapshot of its volume; returns the Job's report and the
    /// snapshot's status.
    async fn restore_and_snapshot(
        &self,
        project: &ProjectRecord,
        namespace: &str,
        restore: &Job,
        generation: u64,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(Report, serde_json::Value), RuntimeError> {
        let masked = !project.masking.rules.is_empty();
        let s3 = project.backup_location.as_deref().is_some_and(|l| l.starts_with("s3://"));
        let jobs = self.api::<Job>(namespace);
        let job_name = resources::restore_job_name(generation);
        let pods = format!("job-name={job_name}");
        let golden = resources::golden_name(generation);
        let wait = Wait::new("the restore", self.waits.every, self.waits.restore);
        let mut patience = Patience::new(self.waits.stuck);
        let mut attempts = 1;
        let report = loop {
            if cancel.is_cancelled() {
                return Err(RuntimeError::Cancelled);
            }
            let job = jobs.get(&job_name).await.platform()?;
            match job_outcome(&job) {
                Some(Ok(())) => {
                    let report = self.restore_report(namespace, &job, project).await?;
                    if masked {
                        delete(&self.api::<Secret>(namespace), &resources::masking_secret_name(generation)).await?;
                    }
                    break report;
                }
                Some(Err(())) => {
                    let failed = self.job_pods(namespace, &job_name).await?;
                    let unidentified =
                        self.needs_injected_identity(s3) && failed.iter().any(diagnose::lacks_aws_identity);
                    if unidentified && attempts < 2 {
                        // The EKS pod identity webhook gives a pod its identity when the pod is
                        // made, from the ServiceAccount as it has seen it: one made just before
                        // the Job may not be seen yet, and the pod fetches without credentials.
                        // It is seen by now: a new pod gets the identity.
                        attempts += 1;
                        tracing::warn!(namespace, job = %job_name, "the restore's pod got no AWS identity; running it again");
                        delete(&jobs, &job_name).await?;
                        for pod in &failed {
                            delete(&self.api::<Pod>(namespace), &pod.name_any()).await?;
                        }
                        apply(&jobs, restore).await?;
                        wait.next().await.map_err(|timeout| RuntimeError::Source(timeout.to_string()))?;
                        continue;
                    }
                    // The restore Job's own reason (devdb-restore's): meant for the user.
                    let detail = termination_message(&failed)
                        .or_else(|| condition(&job, "Failed").and_then(|c| c.message.clone()))
                        .unwrap_or_else(|| "the restore Job failed".into());
                    let hint = if unidentified {
                        format!(
                            " (its pod had no AWS identity: give the ServiceAccount {} of namespace {namespace} an \
                             IAM role that reads the source, by an EKS Pod Identity association or IRSA \
                             (--restore-account-annotations, the chart's sources.serviceAccountAnnotations), \
                             or give the controller source credentials)",
                            resources::RESTORE_ACCOUNT
                        )
                    } else {
                        String::new()
                    };
                    return Err(RuntimeError::Source(format!("the restore failed: {detail}{hint}")));
                }
                None => {}
            }
            if let Some(problem) = patience.observe(self.blocked(namespace, &pods, &golden).await?) {
                return Err(RuntimeError::Stuck { step: "the restore", reason: problem.reason });
            }
            // "the restore failed: not done after …", for the user to see.
            wait.next().await.map_err(|timeout| RuntimeError::Source(timeout.to_string()))?;
        };
        let snapshots = self.snapshots(namespace);
        apply(&snapshots, &resources::volume_snapshot(project.name.as_str(), generation, &self.settings)).await?;
        let snapshot_name = resources::snapshot_name(generation);
        let wait = Wait::new("the volume snapshot", self.waits.every, self.waits.snapshot);
        let mut patience = Patience::new(self.waits.stuck);
        loop {
            let snapshot = snapshots.get(&snapshot_name).await.platform()?;
            let status = &snapshot.data["status"];
            if status["readyToUse"] == true {
                return Ok((report, status.clone()));
            }
            // The snapshotter reports errors it retries (throttling, a busy volume) the same way
            // as lasting ones: only one that stays is a failure.
            let error = status["error"]["message"].as_str();
            let problem = match error {
                Some(e) => Some(Problem { blocker: Blocker::Snapshot, reason: e.to_string() }),
                None => diagnose::snapshot_stalled(&snapshot_name, status),
            };
            if let Some(problem) = patience.observe(problem) {
                return Err(RuntimeError::Stuck { step: "the volume snapshot", reason: problem.reason });
            }
            if wait.next().await.is_err() {
                let late = format!("not ready after {}", humantime::format_duration(self.waits.snapshot));
                let reason = error.map_or_else(|| late.clone(), |e| format!("{e} ({late})"));
                return Err(RuntimeError::Stuck { step: "the volume snapshot", reason });
            }
        }
    }

    /// Removes a database's objects (by label) and waits until its volume is gone, so a clone
    /// can take the same name.
    async fn remove_instance(&self, name: &Name, namespace: &str) -> Result<(), RuntimeError> {
        let selector = database_selector(name.as_str());
        delete_labelled::<StatefulSet>(&self.client, &selector).await?;
        delete_labelled::<PersistentVolumeClaim>(&self.client, &selector).await?;
        let pvcs = self.api::<PersistentVolumeClaim>(namespace);
        let data = resources::data_name(name.as_str());
        let wait = Wait::new("removing the previous clone", self.waits.every, self.waits.release);
        while pvcs.get_opt(&data).await.platform()?.is_some() {
            wait.next().await?;
        }
        Ok(())
    }

    /// Waits until a database's pod answers its readiness query, failing early when something
    /// blocks it.
    async fn wait_ready(&self, database: &DatabaseRecord, namespace: &str) -> Result<(), RuntimeError> {
        let statefulsets = self.api::<StatefulSet>(namespace);
        let wait = Wait::new("starting the database", self.waits.every, self.waits.ready);
        let mut patience = Patience::new(self.waits.stuck);
        loop {
            let sts = statefulsets.get(database.name.as_str()).await.platform()?;
            if sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= 1 {
                return Ok(());
            }
            if let Some(problem) = patience.observe(self.look(namespace, database, &sts).await?) {
                return Err(RuntimeError::Stuck { step: "starting the database", reason: problem.reason });
            }
            wait.next().await?;
        }
    }

    /// The PostgreSQL major of a database's data: its volume's label, or for a volume cloned
    /// before the label was recorded, its project's version (`None`: not known).
    async fn data_major(
        &self,
        database: &DatabaseRecord,
        volume: &PersistentVolumeClaim,
    ) -> Result<Option<u32>, RuntimeError> {
        if let Some(major) = volume.labels().get(resources::POSTGRES_MAJOR_LABEL) {
            return Ok(major.parse().ok());
        }
        let projects = Api::<crate::crd::Project>::all(self.client.clone());
        let project = projects.get_opt(database.project.as_str()).await.platform()?;
        Ok(project.and_then(|p| p.spec.db_version.trim().parse().ok()))
    }

    /// Refuses to run `database` (its `volume`) on the database image when its data is of
    /// another PostgreSQL major: PostgreSQL would refuse the data directory and the pod
    /// crash-loop, while the data left as it is loses nothing.
    ///
    /// # Errors
    /// [`RuntimeError::Stuck`] naming both versions and the ways out.
    async fn same_major(
        &self,
        database: &DatabaseRecord,
        volume: &PersistentVolumeClaim,
        step: &'static str,
    ) -> Result<(), RuntimeError> {
        match self.data_major(database, volume).await? {
            Some(major) if major != self.db_version => Err(RuntimeError::Stuck {
                step,
                reason: format!(
                    "its data is of PostgreSQL {major} and the database image runs PostgreSQL {}, which cannot \
                     open it; it is left as it is. To run it, run the controller with a PostgreSQL {major} \
                     image (--image and --db-version {major}), or dump it from there; or refresh its project \
                     and reset it (a new clone of the project's data, its own changes lost)",
                    self.db_version
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Applies the database's StatefulSet with `replicas` (0: stopped, its volume kept).
    async fn scale(&self, database: &DatabaseRecord, replicas: i32) -> Result<(), RuntimeError> {
        let namespace = resources::namespace_name(database.project.as_str());
        self.backup_objects(database).await?;
        let mut statefulset = self.statefulset(database);
        resources::owned_by(&mut statefulset.metadata, "Database", database.name.as_str(), &database.id);
        if let Some(spec) = statefulset.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        apply(&self.api::<StatefulSet>(&namespace), &statefulset).await.map(drop)
    }

    /// Applies what a database runs on, except its volume.
    async fn apply_instance(&self, database: &DatabaseRecord, project: &ProjectRecord) -> Result<(), RuntimeError> {
        let (db, p) = (database.name.as_str(), project.name.as_str());
        let namespace = resources::namespace_name(p);
        let host = self.domain.host_for(&database.name);
        let owned = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            resources::owned_by(meta, "Database", db, &database.id);
        };
        let mut secret = resources::database_secret(
            p,
            db,
            &project.username,
            &database.password,
            &project.database,
            &host,
            self.public_port,
        );
        owned(&mut secret.metadata);
        apply(&self.api::<Secret>(&namespace), &secret).await?;
        self.backup_objects(database).await?;
        let mut statefulset = self.statefulset(database);
        owned(&mut statefulset.metadata);
        apply(&self.api::<StatefulSet>(&namespace), &statefulset).await?;
        let mut service = resources::service(p, db);
        owned(&mut service.metadata);
        apply(&self.api::<Service>(&namespace), &service).await?;
        let mut policy = resources::network_policy(p, db, &self.settings);
        owned(&mut policy.metadata);
        apply(&self.api::<NetworkPolicy>(&namespace), &policy).await?;
        Ok(())
    }
}

/// The last non-empty termination message of `pods`' containers (the fetch, an init
/// container, reports its failure; the build its outcome).
fn termination_message(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .map(|m| m.trim().to_string())
        .rfind(|m| !m.is_empty())
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether a restore Job is done: `Some(Ok)` succeeded, `Some(Err)` failed, `None` still running.
fn job_outcome(job: &Job) -> Option<Result<(), ()>> {
    if condition(job, "Complete").is_some() || job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        Some(Ok(()))
    } else if condition(job, "Failed").is_some() {
        Some(Err(()))
    } else {
        None
    }
}

impl Runtime for KubeRuntime {
    fn postgres_version(&self) -> u32 {
        self.db_version
    }

    async fn restore_database(
        &self,
        database: &DatabaseRecord,
        _source: &DatabaseRecord,
        _project: &ProjectRecord,
        _at: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Source(format!(
            "database {}: restores from backups need the local runtime for now",
            database.name
        )))
    }

    /// Where a backup repository is configured (`--backup-repo s3://…`).
    fn backups(&self) -> bool {
        self.backups.is_some()
    }

    /// Not checked here yet (its backups are in S3, read by pgBackRest in the database's pod).
    async fn verify_backups(&self, _database: &DatabaseRecord) -> Result<bool, RuntimeError> {
        Ok(false)
    }

    async fn archive_status(
        &self,
        _database: &DatabaseRecord,
    ) -> Result<Option<devdb_core::runtime::ArchiveStatus>, RuntimeError> {
        Ok(None)
    }

    async fn keep_before_restore(&self, database: &DatabaseRecord) -> Result<std::time::SystemTime, RuntimeError> {
        Err(RuntimeError::Source(format!("database {}: restores need the local runtime for now", database.name)))
    }

    async fn restore_in_place(
        &self,
        database: &DatabaseRecord,
        _project: &ProjectRecord,
        _to: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Source(format!("database {}: restores need the local runtime for now", database.name)))
    }

    /// A Job beside the database's pod (see [`crate::backups::backup_job`]), read and removed
    /// once it ends.
    async fn back_up(&self, database: &DatabaseRecord) -> Result<devdb_core::runtime::BackedUp, RuntimeError> {
        let failed = |detail: String| RuntimeError::Step { step: "backing up", detail };
        if self.archiving(database).is_none() {
            return Err(failed(format!("database {}: this controller has no backup repository", database.name)));
        }
        // Its configuration as its backups say now (a retention changed, a key rotated).
        self.backup_objects(database).await?;
        let namespace = resources::namespace_name(database.project.as_str());
        let jobs = self.api::<Job>(&namespace);
        let mut job = crate::backups::backup_job(database.project.as_str(), database.name.as_str(), &self.settings);
        resources::owned_by(&mut job.metadata, "Database", database.name.as_str(), &database.id);
        let name = apply(&jobs, &job).await?.name_any();
        let wait = Wait::new("backing up", self.waits.every, self.waits.restore);
        let outcome = loop {
            if let Some(outcome) = job_outcome(&jobs.get(&name).await.platform()?) {
                break outcome;
            }
            wait.next().await?;
        };
        let pods = self.job_pods(&namespace, &name).await?;
        let result = match (outcome, pods.first()) {
            (Ok(()), Some(pod)) => {
                let params = kube::api::LogParams { container: Some("backup".into()), ..Default::default() };
                let log = self.api::<Pod>(&namespace).logs(&pod.name_any(), &params).await.platform()?;
                crate::backups::backed_up(&log).map_err(failed)
            }
            _ => Err(failed(termination_message(&pods).unwrap_or_else(|| "its Job failed without a message".into()))),
        };
        delete(&jobs, &name).await?;
        result
    }

    /// Every pod listens on PostgreSQL's own port.
    fn new_port(&self, _taken: &std::collections::HashSet<u16>) -> Result<u16, RuntimeError> {
        Ok(5432)
    }

    async fn check_source(&self, location: &str, allow_private: bool) -> Result<(), String> {
        // Restore Jobs in the cluster have S3 credentials but no controller files.
        let what = "the kube runtime restores from http://, https:// and s3:// URLs";
        let policy =
            if allow_private { devdb_restore::SourcePolicy::Any } else { devdb_restore::SourcePolicy::PublicOnly };
        devdb_restore::policy::check_source(location, &["http://", "https://", "s3://"], what, policy).await
    }

    async fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        // The golden volume's size bounds a restore Job's disk.
        _allowance: Option<devdb_core::runtime::DiskAllowance>,
        _progress: ProgressFn,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let name = project.name.as_str();
        let namespace = self.prepare_project(project).await?;
        let pvcs = self.api::<PersistentVolumeClaim>(&namespace);
        let jobs = self.api::<Job>(&namespace);
        let secrets = self.api::<Secret>(&namespace);
        let golden = resources::golden_name(generation);
        let job_name = resources::restore_job_name(generation);
        let masked = !project.masking.rules.is_empty();
        apply(&pvcs, &resources::golden_pvc(name, generation, &self.settings)).await?;
        if masked {
            let secret = resources::masking_secret(name, generation, &project.masking, &project.mask_key);
            apply(&secrets, &secret).await?;
        }
        let s3 = project.backup_location.as_deref().is_some_and(|l| l.starts_with("s3://"));
        let options = RestoreOptions { allow_private_source: project.allow_private_source, masked, s3 };
        let job = resources::restore_job(name, generation, &project.database, options, &self.settings);
        apply(&jobs, &job).await?;
        let (report, ready) = match self.restore_and_snapshot(project, &namespace, &job, generation, &cancel).await {
            Ok(ready) => ready,
            // The cluster API failed: the next pass adopts the Job (or snapshot) still there.
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                // Nothing of a failed (or cancelled) restore stays behind.
                delete(&self.snapshots(&namespace), &resources::snapshot_name(generation)).await?;
                delete(&jobs, &job_name).await?;
                if masked {
                    delete(&secrets, &resources::masking_secret_name(generation)).await?;
                }
                delete(&pvcs, &golden).await?;
                return Err(error);
            }
        };
        // The snapshot holds the data now: the Job and the golden volume can go.
        delete(&jobs, &job_name).await?;
        delete(&pvcs, &golden).await?;
        Ok(SnapshotRecord {
            generation,
            created_at: ready["creationTime"]
                .as_str()
                .map_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string(), String::from),
            size_bytes: ready["restoreSize"].as_str().map(quantity_bytes).unwrap_or(0),
            findings: report.findings,
            unlisted_findings: report.unlisted,
            unlisted_unmasked: report.unlisted_unmasked,
            // Set by the reconciler.
            masked_with: Vec::new(),
            masked_key_version: 0,
            masking_verified: report.verified,
        })
    }

    async fn clean_project(&self, project: &Name, keep: &[u64]) -> Result<(), RuntimeError> {
        let base = format!("app.kubernetes.io/managed-by=devdb,devdb.io/project={project}");
        if keep.is_empty() {
            // The namespace takes everything in it along.
            let namespaces = Api::<Namespace>::all(self.client.clone());
            for ns in namespaces.list(&ListParams::default().labels(&base)).await.platform()?.items {
                delete(&namespaces, &ns.name_any()).await?;
            }
            return Ok(());
        }
        let namespace = resources::namespace_name(project.as_str());
        let keep = keep.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let others = ListParams::default()
            .labels(&format!("{base},{label},{label} notin ({keep})", label = resources::GENERATION_LABEL));
        delete_matching(&self.snapshots(&namespace), &others).await?;
        delete_matching(&self.api::<Job>(&namespace), &others).await?;
        // A masking Secret a restore left (it failed to reach the cluster API, then was
        // superseded): its key goes with it.
        delete_matching(&self.api::<Secret>(&namespace), &others).await?;
        delete_matching(&self.api::<PersistentVolumeClaim>(&namespace), &others).await
    }

    async fn clone_database(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        generation: u64,
    ) -> Result<(), RuntimeError> {
        let namespace = resources::namespace_name(project.name.as_str());
        let pvcs = self.api::<PersistentVolumeClaim>(&namespace);
        let data = resources::data_name(database.name.as_str());
        let snapshot = resources::snapshot_name(generation);
        // A clone of this snapshot already there is adopted (a controller restarted mid-clone);
        // a reset, or a clone of another snapshot, starts over.
        let existing = pvcs.get_opt(&data).await.platform()?;
        let source = existing.as_ref().and_then(|p| p.spec.as_ref()?.data_source.as_ref()).map(|s| s.name.clone());
        if existing.is_some() && (database.want == Want::Reset || source.as_deref() != Some(snapshot.as_str())) {
            self.remove_instance(&database.name, &namespace).await?;
        }
        let mut pvc = resources::database_pvc(
            project.name.as_str(),
            database.name.as_str(),
            generation,
            self.db_version,
            &self.settings,
        );
        resources::owned_by(&mut pvc.metadata, "Database", database.name.as_str(), &database.id);
        apply(&pvcs, &pvc).await?;
        self.apply_instance(database, project).await?;
        let started = match self.wait_ready(database, &namespace).await {
            Ok(()) => self.isolation.check(&self.backend(database)).await,
            Err(error) => Err(error),
        };
        match started {
            Err(error) if !error.is_transient() => {
                // A pod that cannot start stops trying (pulling, crash-looping, holding a node's
                // attachment); the fresh clone goes too, and a reset starts over.
                let selector = database_selector(database.name.as_str());
                delete_labelled::<StatefulSet>(&self.client, &selector).await?;
                delete_labelled::<PersistentVolumeClaim>(&self.client, &selector).await?;
                Err(error)
            }
            result => result,
        }
    }

    async fn ensure_running(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let namespace = resources::namespace_name(database.project.as_str());
        // Ready as the watch last saw it: no request (a pass of every running database after a
        // leader change asked for a thousand StatefulSets). A pod that died since is the
        // supervisor's, from the same watch.
        if self.watched_ready(&namespace, database.name.as_str()) {
            return Ok(());
        }
        if let Some(sts) = self.api::<StatefulSet>(&namespace).get_opt(database.name.as_str()).await.platform()? {
            // Kubernetes restarts its pod; it runs again once the pod is ready (a drain, a spot
            // reclaim, an OOM kill, a volume re-attaching: one `recovering` episode, the route
            // held meanwhile), or is stuck with the reason.
            if sts.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= 1 {
                return Ok(());
            }
            // Not running: with the template it should have, so that settings it could not
            // start with, reverted meanwhile, are reverted in its StatefulSet too (and the pod
            // stuck on them replaced); never onto an image of another major than its data's.
            let data = resources::data_name(database.name.as_str());
            if let Some(volume) = self.api::<PersistentVolumeClaim>(&namespace).get_opt(&data).await.platform()? {
                match self.same_major(database, &volume, "starting the database").await {
                    Ok(()) => self.scale(database, 1).await?,
                    Err(error) if error.is_transient() => return Err(error),
                    // Another major's data: its StatefulSet stays as it is.
                    Err(_) => {}
                }
            }
            return self.wait_ready(database, &namespace).await;
        }
        let data = resources::data_name(database.name.as_str());
        if self.api::<PersistentVolumeClaim>(&namespace).get_opt(&data).await.platform()?.is_none() {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        }
        Err(RuntimeError::Step {
            step: "checking the database",
            detail: format!("its StatefulSet is gone (volume {data} remains); reset it to run it again"),
        })
    }

    async fn stop_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        // Scaled to zero: no pod, no memory; the volume and its data stay.
        self.scale(database, 0).await
    }

    async fn start_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let namespace = resources::namespace_name(database.project.as_str());
        let data = resources::data_name(database.name.as_str());
        let Some(volume) = self.api::<PersistentVolumeClaim>(&namespace).get_opt(&data).await.platform()? else {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        };
        self.same_major(database, &volume, "starting the database").await?;
        self.scale(database, 1).await?;
        self.wait_ready(database, &namespace).await?;
        // Checked again every few hours (see `isolation`): a wake is when most databases start.
        self.isolation.check(&self.backend(database)).await
    }

    async fn apply_settings(&self, database: &DatabaseRecord, _restart: bool) -> Result<(), RuntimeError> {
        // The parameters are the pod's arguments: any change rolls the pod (a restart, whatever
        // the parameter), and the wait is for the new one.
        let namespace = resources::namespace_name(database.project.as_str());
        let data = resources::data_name(database.name.as_str());
        let Some(volume) = self.api::<PersistentVolumeClaim>(&namespace).get_opt(&data).await.platform()? else {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        };
        // Rolled onto the image of another major, the pod would not start again.
        self.same_major(database, &volume, "applying the settings").await?;
        self.scale(database, 1).await?;
        let statefulsets = self.api::<StatefulSet>(&namespace);
        let wait = Wait::new("restarting with new settings", self.waits.every, self.waits.ready);
        let mut patience = Patience::new(self.waits.stuck);
        loop {
            let sts = statefulsets.get(database.name.as_str()).await.platform()?;
            if rollout::rolled(&sts) {
                return Ok(());
            }
            if let Some(problem) = patience.observe(self.look(&namespace, database, &sts).await?) {
                // Retried, not failed: the database stays running (recovering), each pass
                // applying the settings wanted then, so that reverting them brings it back.
                return Err(RuntimeError::Platform(Box::new(SettingsRefused(problem.reason))));
            }
            wait.next().await?;
        }
    }

    async fn remove_database(&self, name: &Name) -> Result<(), RuntimeError> {
        let selector = database_selector(name.as_str());
        let mut namespaces = delete_labelled::<StatefulSet>(&self.client, &selector).await?;
        namespaces.extend(delete_labelled::<Service>(&self.client, &selector).await?);
        namespaces.extend(delete_labelled::<NetworkPolicy>(&self.client, &selector).await?);
        let volumes = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&ListParams::default().labels(&selector))
            .await
            .platform()?;
        namespaces.extend(volumes.items.iter().filter_map(|v| v.namespace()));
        // Secrets are never listed across namespaces (the controller cannot read other
        // namespaces' Secrets): removed by label where the database's other objects are, before
        // its volume (the last trace of where it was). One left behind by a failure is its
        // owner's, and goes with the Database resource.
        for namespace in &namespaces {
            delete_matching(&self.api::<Secret>(namespace), &ListParams::default().labels(&selector)).await?;
        }
        for volume in &volumes.items {
            delete(&self.api::<PersistentVolumeClaim>(&volume.namespace().unwrap_or_default()), &volume.name_any())
                .await?;
        }
        Ok(())
    }

    async fn dead(&self, running: &[DatabaseRecord]) -> Result<Vec<Name>, RuntimeError> {
        // StatefulSets of databases, and whether their pod is ready: as watched, else one list.
        let watched = self
            .statefulsets
            .as_ref()
            .filter(|(_, listed)| listed.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(store, _)| store.state());
        let sets: Vec<Arc<StatefulSet>> = match watched {
            Some(sets) => sets,
            None => Api::<StatefulSet>::all(self.client.clone())
                .list(&ListParams::default().labels(DATABASE_SETS))
                .await
                .platform()?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let ready: std::collections::HashSet<String> = sets
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0) > 0)
            .filter_map(|s| s.labels().get("devdb.io/database").cloned())
            .collect();
        Ok(running.iter().filter(|d| !ready.contains(d.name.as_str())).map(|d| d.name.clone()).collect())
    }

    async fn existing_databases(&self) -> Result<Vec<Name>, RuntimeError> {
        let pvcs = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=devdb,devdb.io/database"))
            .await
            .platform()?;
        Ok(label_values(pvcs.items.iter().map(|p| p.labels()), "devdb.io/database"))
    }

    async fn existing_projects(&self) -> Result<Vec<Name>, RuntimeError> {
        let namespaces = Api::<Namespace>::all(self.client.clone())
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=devdb,devdb.io/project"))
            .await
            .platform()?;
        Ok(label_values(namespaces.items.iter().map(|n| n.labels()), "devdb.io/project"))
    }

    fn backend(&self, database: &DatabaseRecord) -> String {
        resources::backend(database.project.as_str(), database.name.as_str(), &self.settings.cluster_domain)
    }

    /// Through the proxy, as its owner connects (a database admits only the proxy).
    async fn sample(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
    ) -> Result<Option<devdb_core::runtime::Counters>, RuntimeError> {
        match &self.monitor {
            Some(monitor) => {
                monitor.sample(&database.name, &project.username, &database.password, &project.database).await.map(Some)
            }
            None => Ok(None),
        }
    }
}

/// A database whose pod does not start with its new settings (PostgreSQL refuses a parameter,
/// or has not the memory it asks for).
#[derive(Debug, thiserror::Error)]
#[error("the database does not start with its new settings: {0}; set them back to run it again")]
struct SettingsRefused(String);

/// The distinct valid names under `label`.
fn label_values<'a>(
    labels: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
    label: &str,
) -> Vec<Name> {
    let mut names: Vec<Name> = labels.filter_map(|l| Name::new(l.get(label)?).ok()).collect();
    names.sort();
    names.dedup();
    names
}
