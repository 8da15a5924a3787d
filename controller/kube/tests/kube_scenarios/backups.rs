//! Backups on Kubernetes: asked for through the API only where the controller has a repository,
//! kept in the database's spec, and a database with backups cloned with its project's backup
//! account, a Secret holding its stanza's configuration and key, and a pod that archives.

use std::collections::BTreeMap;

use devdb_backup::{Repository, S3Settings};
use devdb_core::model::Key;
use devdb_core::runtime::Runtime as _;
use devdb_kube::backups::{self, BackupSettings};
use devdb_kube::resources;
use serde_json::{Value, json};

use crate::api::serve_on;
use crate::common::*;

fn repository() -> BackupSettings {
    BackupSettings {
        repository: Repository::parse("s3://acme-devdb/backups", S3Settings::default()).expect("S3"),
        secret: KEY.to_vec(),
        account_annotations: BTreeMap::from([(
            "eks.amazonaws.com/role-arn".into(),
            "arn:aws:iam::123456789012:role/devdb-backup".into(),
        )]),
    }
}

/// The stanza of kate-pg's clone on [`volume`].
const STANZA: &str = "uid-kate-0f1e2d3c";

/// kate-pg's volume, as the API server has it.
fn volume() -> Value {
    let mut pvc = pvc_from_snapshot();
    pvc["metadata"]["uid"] = json!("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    pvc
}

fn with_backups(mut database: Value) -> Value {
    database["spec"]["backup"] = json!({});
    database
}

#[tokio::test]
async fn backups_are_refused_without_a_repository_and_kept_in_the_spec_with_one() {
    let http = devdb_cli::http::client_builder().build().expect("client");
    let body = json!({ "name": "kate-pg", "project": "shop", "backup": { "enabled": true } });

    let (url, mut c) = serve_on(cluster(settings())).await;
    let request = tokio::spawn(http.post(format!("{url}/v1/databases")).json(&body).send());
    c.server.run(vec![Step::get(&format!("{PROJECTS}/shop")).reply(ready_project())]).await;
    let response = request.await.expect("ran").expect("answered");
    assert_eq!(response.status(), 400);
    let refused = response.text().await.expect("text");
    assert!(refused.contains("no backup repository") && refused.contains("backups.repository"), "{refused}");
    c.server.quiet().await;

    let (url, mut c) = serve_on(backup_cluster(repository())).await;
    let request = tokio::spawn(http.post(format!("{url}/v1/databases")).json(&body).send());
    let bodies = c
        .server
        .run(vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
            // The owner's quota.
            Step::list(DATABASES, vec![]),
            Step::list(PROJECTS, vec![]),
            Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
            Step::post(DATABASES).reply(with_backups(database(json!(null), 0, false))).has(json!({
                "metadata": { "name": "kate-pg" },
                "spec": { "project": "shop", "backup": {} },
            })),
        ])
        .await;
    let response = request.await.expect("ran").expect("answered");
    assert_eq!(response.status(), 201, "{bodies:?}");
    let created: Value = response.json().await.expect("json");
    assert_eq!(created["backup"]["enabled"], true, "{created}");
    c.server.quiet().await;
}

#[tokio::test]
async fn a_database_with_backups_runs_as_the_backup_account_with_its_key_in_a_secret_and_archives() {
    let mut c = backup_cluster(repository());
    let owned = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        resources::owned_by(meta, "Database", "kate-pg", "uid-kate");
    };
    let mut config =
        backups::config_secret("shop", "kate-pg", STANZA, devdb_backup::Retention::default(), &repository());
    owned(&mut config.metadata);
    let mut sts =
        backups::with_archiving(resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new()), "kate-pg");
    owned(&mut sts.metadata);
    let mut instance = instance_steps();
    // Before the pod that needs them: the account and the configuration.
    instance.splice(
        2..3,
        [
            // The clone's volume names its stanza.
            Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(volume()),
            Step::apply(
                &format!("{NS}/serviceaccounts/devdb-backup"),
                &backups::backup_account("shop", &repository().account_annotations),
            ),
            Step::apply(&format!("{NS}/secrets/kate-pg-backup"), &config),
            Step::apply(STATEFULSET, &sts),
        ],
    );
    let creating = with_backups(database(json!({ "phase": "creating" }), 0, false));
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(with_backups(database(json!(null), 0, false))),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(with_backups(database(json!(null), 0, false))),
        Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(creating.clone()),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).fail(404, "NotFound"),
    ];
    steps.extend(instance);
    steps.extend([
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(creating),
        Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(with_backups(database(
            json!({ "phase": "running" }),
            0,
            false,
        ))),
        event("Running", "Database", "kate-pg"),
    ]);
    let bodies = c.pass(Key::Database(name("kate-pg")), steps).await;
    // The stanza's key is in its Secret, and in no other request (a status, an event).
    let key = devdb_backup::config::stanza_key(KEY, STANZA);
    assert_eq!(bodies[9]["stringData"]["stanza"], STANZA, "its own clone's stanza");
    let conf = bodies[9]["stringData"]["pgbackrest.conf"].as_str().expect("the configuration");
    assert!(conf.contains(&format!("\nrepo1-cipher-pass={key}\n")), "{conf}");
    assert!(conf.contains("\nrepo1-s3-key-type=web-id\n"), "IRSA's role: {conf}");
    for (i, body) in bodies.iter().enumerate().filter(|(i, _)| *i != 9) {
        assert!(!body.to_string().contains(&key), "request {i} carries the key: {body}");
    }
}

/// `pgbackrest info --output=json` of the database's stanza after a full backup.
const INFO: &str = r#"[{"archive":[{"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],"backup":[{"error":false,"info":{"repository":{"delta":4096,"size":4096},"size":30000},"label":"20261207-100000F","timestamp":{"start":1796637600,"stop":1796637660},"type":"full"}],"name":"uid-kate","status":{"code":0,"message":"ok"}}]"#;

const JOB: &str = "/apis/batch/v1/namespaces/devdb-shop/jobs/kate-pg-backup";

/// The backup Job as the runtime applies it (owned by the database), with `status`.
fn backup_job(status: Value) -> (k8s_openapi::api::batch::v1::Job, Value) {
    let mut job = backups::backup_job("shop", "kate-pg", &settings());
    resources::owned_by(&mut job.metadata, "Database", "kate-pg", "uid-kate");
    let mut reply = serde_json::to_value(&job).expect("json");
    reply["status"] = status;
    (job, reply)
}

/// Backs up database kate-pg (read from its resource) on `c`'s runtime, answering `steps`.
async fn back_up(c: &mut Cluster, steps: Vec<Step>) -> Result<devdb_core::runtime::BackedUp, String> {
    let (store, runtime) = (c.reconciler.store().clone(), c.reconciler.runtime().clone());
    let backing_up = tokio::spawn(async move {
        let record = devdb_core::store::Store::database(&*store, "kate-pg").await.expect("read").expect("there");
        runtime.back_up(&record).await.map_err(|e| e.to_string())
    });
    let mut config = backups::config_secret("shop", "kate-pg", STANZA, devdb_backup::Retention::Days(7), &repository());
    resources::owned_by(&mut config.metadata, "Database", "kate-pg", "uid-kate");
    let mut running = with_backups(database(json!({ "phase": "running" }), 0, false));
    running["spec"]["backup"]["retention"] = json!("7d");
    let mut script = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running),
        // Its configuration as its backups say now: kept for 7 days.
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(volume()),
        Step::apply(
            &format!("{NS}/serviceaccounts/devdb-backup"),
            &backups::backup_account("shop", &repository().account_annotations),
        ),
        Step::apply(&format!("{NS}/secrets/kate-pg-backup"), &config),
    ];
    script.extend(steps);
    c.server.run(script).await;
    let result = backing_up.await.expect("ran");
    c.server.quiet().await;
    result
}

#[tokio::test]
async fn a_backup_is_a_job_beside_the_database_whose_log_says_what_the_stanza_holds_then_it_goes() {
    let mut c = backup_cluster(repository());
    let (job, running) = backup_job(json!({ "active": 1 }));
    let (_, done) = backup_job(json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] }));
    let backed_up = back_up(
        &mut c,
        vec![
            Step::apply(JOB, &job).reply(running.clone()),
            Step::get(JOB).reply(running),
            Step::get(JOB).reply(done),
            Step::list(
                &format!("{NS}/pods?labelSelector=job-name%3Dkate-pg-backup"),
                vec![pod("kate-pg-backup-x1", json!({}))],
            ),
            Step::get(&format!("{NS}/pods/kate-pg-backup-x1/log?container=backup"))
                .text(&format!("P00   WARN: no prior backup exists, incr backup has been changed to full\n{INFO}\n")),
            Step::delete(JOB).has(background()),
        ],
    )
    .await
    .expect("backed up");
    let at = |secs| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    assert_eq!(backed_up.at, at(1_796_637_660));
    assert_eq!(backed_up.restorable_from, at(1_796_637_661), "a second after the backup's end");
    assert_eq!(backed_up.repository_bytes, 4096);
}

#[tokio::test]
async fn a_failed_backup_says_pgbackrests_reason_and_its_job_goes_too() {
    let mut c = backup_cluster(repository());
    let (job, _) = backup_job(json!(null));
    let (_, failed) = backup_job(json!({ "failed": 1, "conditions": [{ "type": "Failed", "status": "True" }] }));
    let reason = "ERROR: [039]: HTTP request failed with 403 (Forbidden)";
    let pod = pod(
        "kate-pg-backup-x1",
        json!({ "containerStatuses": [{
            "name": "backup", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 39, "message": reason } },
        }] }),
    );
    let error = back_up(
        &mut c,
        vec![
            Step::apply(JOB, &job),
            Step::get(JOB).reply(failed),
            Step::list(&format!("{NS}/pods?labelSelector=job-name%3Dkate-pg-backup"), vec![pod]),
            Step::delete(JOB).has(background()),
        ],
    )
    .await
    .expect_err("failed");
    assert!(error.contains("403 (Forbidden)"), "{error}");
}

#[tokio::test]
async fn a_database_started_with_backups_gets_its_account_and_secret_before_its_pod() {
    let mut c = backup_cluster(repository());
    let stopped = with_backups(database(json!({ "phase": "stopped", "snapshotGeneration": 1 }), 0, false));
    let starting = with_backups(database(json!({ "phase": "starting", "snapshotGeneration": 1 }), 0, false));
    let mut config =
        backups::config_secret("shop", "kate-pg", STANZA, devdb_backup::Retention::default(), &repository());
    resources::owned_by(&mut config.metadata, "Database", "kate-pg", "uid-kate");
    let mut sts =
        backups::with_archiving(resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new()), "kate-pg");
    resources::owned_by(&mut sts.metadata, "Database", "kate-pg", "uid-kate");
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = Some(1);
    }
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(stopped.clone()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(stopped),
        Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(starting.clone()),
        event("Starting", "Database", "kate-pg"),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(volume()),
        Step::apply(
            &format!("{NS}/serviceaccounts/devdb-backup"),
            &backups::backup_account("shop", &repository().account_annotations),
        ),
        Step::apply(&format!("{NS}/secrets/kate-pg-backup"), &config),
        Step::apply(STATEFULSET, &sts),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(starting),
        Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(with_backups(database(
            json!({ "phase": "running" }),
            0,
            false,
        ))),
        event("Running", "Database", "kate-pg"),
    ];
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn backups_turned_on_for_a_running_database_roll_its_pod_to_archive_and_say_so() {
    let mut c = backup_cluster(repository());
    // Asked for in the spec; its pod does not archive yet.
    let running =
        with_backups(database(json!({ "phase": "running", "snapshotGeneration": 1, "archiving": false }), 0, false));
    let mut config =
        backups::config_secret("shop", "kate-pg", STANZA, devdb_backup::Retention::default(), &repository());
    resources::owned_by(&mut config.metadata, "Database", "kate-pg", "uid-kate");
    let mut sts =
        backups::with_archiving(resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new()), "kate-pg");
    resources::owned_by(&mut sts.metadata, "Database", "kate-pg", "uid-kate");
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = Some(1);
    }
    let rolled = crate::settings::reported(serde_json::to_value(&sts).expect("json"), 1, "kate-pg-2", "kate-pg-2");
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(volume()),
        Step::apply(
            &format!("{NS}/serviceaccounts/devdb-backup"),
            &backups::backup_account("shop", &repository().account_annotations),
        ),
        Step::apply(&format!("{NS}/secrets/kate-pg-backup"), &config),
        Step::apply(STATEFULSET, &sts),
        Step::get(STATEFULSET).reply(rolled),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(running)
            .has(json!({ "status": { "phase": "running", "archiving": true } })),
    ];
    c.pass(Key::Database(name("kate-pg")), steps).await;
}
