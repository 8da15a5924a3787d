//! Monitoring: samples become charts, `/metrics` and usage reports (each owner sees only its own),
//! and histories are written to the store once per interval, spread over it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use devdb_core::fake::{FakePlatform, FakeRuntime};
use devdb_core::monitor::Monitor;
use devdb_core::runtime::Counters;
use devdb_core::store::Store;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

/// On Kubernetes each history write is a ConfigMap written to etcd: a database's history is
/// written once per [`PERSIST_EVERY`] however often it is sampled, the databases' writes spread
/// over the interval, while charts stay current from memory.
#[tokio::test]
async fn histories_are_written_once_per_interval_spread_over_it_and_charts_stay_current() {
    use devdb_core::monitor::PERSIST_EVERY;
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let databases: Vec<String> = (0..12).map(|i| format!("db-{i:02}")).collect();
    for db in &databases {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
        core.runtime.set_counters(&name(db), Counters { size_bytes: 1 << 20, commits: 1, ..Counters::default() });
    }
    let t0 = std::time::SystemTime::now();
    let every = std::time::Duration::from_secs(30);
    let ticks = u32::try_from(2 * PERSIST_EVERY.as_secs() / every.as_secs()).expect("ticks");
    let mut writes_per_tick = Vec::new();
    for tick in 0..ticks {
        let before = core.store.document_writes("history");
        core.monitor.sample_once(t0 + every * tick).await.expect("sample");
        writes_per_tick.push(core.store.document_writes("history") - before);
    }
    let writes: u64 = writes_per_tick.iter().sum();
    // Two intervals: each database once or twice (its first write falls anywhere in the first).
    assert!((12..=24).contains(&writes), "{writes} writes of 12 histories over two intervals: {writes_per_tick:?}");
    assert!(writes_per_tick.iter().all(|n| *n <= 4), "spread over the ticks: {writes_per_tick:?}");
    let (status, chart) = core.call(Some(KATE), "GET", "/v1/databases/db-00/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let samples = usize::try_from(ticks).expect("count");
    assert_eq!(chart["points"].as_array().map(Vec::len), Some(samples), "every sample, current: {chart}");
}

/// Histories due in a tick whose writes fail are written at the next tick, not an interval later.
#[tokio::test]
async fn histories_that_could_not_be_written_are_written_at_the_next_tick() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for db in ["db-00", "db-01"] {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
        core.runtime.set_counters(&name(db), Counters { size_bytes: 1 << 20, commits: 1, ..Counters::default() });
    }
    let t0 = std::time::SystemTime::now();
    let every = std::time::Duration::from_secs(30);
    let ticks = u32::try_from(devdb_core::monitor::PERSIST_EVERY.as_secs() / every.as_secs()).expect("ticks");
    core.store.refuse_document_writes(true);
    // A whole interval: each history fell due once, and its write failed.
    for tick in 0..ticks {
        let _ = core.monitor.sample_once(t0 + every * tick).await;
    }
    assert_eq!(core.store.document_writes("history"), 0);
    core.store.refuse_document_writes(false);
    core.monitor.sample_once(t0 + every * ticks).await.expect("sample");
    assert_eq!(core.store.document_writes("history"), 2, "both, at the first tick that can write");
}

#[tokio::test]
async fn samples_become_charts_metrics_and_usage_reports_each_owner_sees_only_its_own() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (token, db) in [(KATE, "kate-pg"), (BOB, "bob-pg")] {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(token), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    }
    let counters = |commits: u64, active: u32| Counters {
        size_bytes: 8 << 20,
        active,
        idle: 2,
        commits,
        rows_written: commits * 3,
        blocks_hit: commits * 99,
        blocks_read: commits,
        ..Counters::default()
    };
    // At the start of a five-minute bucket, so both samples fall in one point of the day's series.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now - now % 300);
    core.runtime.set_counters(&name("kate-pg"), counters(100, 1));
    core.monitor.sample_once(t0).await.expect("sample");
    core.runtime.set_counters(&name("kate-pg"), counters(400, 3));
    core.monitor.sample_once(t0 + std::time::Duration::from_secs(30)).await.expect("sample");

    let (status, history) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let points = history["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{history}");
    assert_eq!(points[0]["commits"], Value::Null, "no rate from a first sample");
    assert_eq!((points[1]["commits"].as_f64(), points[1]["rowsWritten"].as_f64()), (Some(10.0), Some(30.0)));
    assert_eq!((points[1]["active"].as_u64(), points[1]["cacheHit"].as_f64()), (Some(3), Some(0.99)));
    assert_eq!(history["sampleEverySecs"], 30);
    let (_, day) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics?range=day", None).await;
    assert_eq!(day["points"].as_array().map(Vec::len), Some(1), "one five-minute point: {day}");
    assert_eq!(
        core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics?range=year", None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(core.call(Some(BOB), "GET", "/v1/databases/kate-pg/metrics", None).await.0, StatusCode::NOT_FOUND);

    // A new controller (a restart, or another replica taking the lead) goes on from the
    // history in the store, as the last one wrote it when it stopped; its first sample has no
    // rates to give.
    core.monitor.flush().await.expect("written when the monitor stops");
    let restarted =
        Monitor::<FakePlatform>::new(core.store.clone(), core.runtime.clone(), std::time::Duration::from_secs(30));
    restarted.sample_once(t0 + std::time::Duration::from_secs(40)).await.expect("sample");
    let kate_db = core.store.database("kate-pg").await.expect("read").expect("exists");
    let history = restarted.history(&kate_db).await.expect("history");
    assert_eq!(history.hour.len(), 3, "two samples from before the restart, one after");
    assert_eq!(history.latest().map(|p| p.commits), Some(None));

    let metrics = core.text_as(ADMIN, "/metrics").await;
    for line in [
        "devdb_database_size_bytes{database=\"kate-pg\"} 8388608",
        "devdb_database_connections{database=\"kate-pg\",state=\"active\"} 3",
        "devdb_database_commits_per_second{database=\"kate-pg\"} 10.0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!metrics.contains("devdb_database_size_bytes{database=\"bob-pg\"}"), "bob's gave no sample");

    // Deleted: its history goes, and the report counts it.
    let id = core.store.database("kate-pg").await.expect("read").expect("exists").id;
    let history_key = devdb_core::monitor::history_key(&id);
    assert!(core.store.document(&history_key).await.expect("read").is_some(), "kept in the store");
    assert_eq!(core.call(Some(KATE), "DELETE", "/v1/databases/kate-pg", None).await.0, StatusCode::ACCEPTED);
    for _ in 0..POLLS {
        if core.store.database("kate-pg").await.expect("read").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    core.monitor.sample_once(t0 + std::time::Duration::from_secs(60)).await.expect("sample");
    assert_eq!(core.store.document(&history_key).await.expect("read"), None, "forgotten with its database");
    let (_, all) = core.call(Some(ADMIN), "GET", "/v1/reports/usage", None).await;
    let rows = all["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{all}");
    let kate = rows.iter().find(|r| r["owner"] == "kate").expect("kate's row");
    assert_eq!((kate["databasesCreated"].as_u64(), kate["databasesDeleted"].as_u64()), (Some(1), Some(1)), "{kate}");
    assert_eq!((kate["peakConnections"].as_u64(), kate["peakDiskBytes"].as_u64()), (Some(5), Some(8 << 20)));
    let (_, mine) = core.call(Some(KATE), "GET", "/v1/reports/usage", None).await;
    assert!(mine["rows"].as_array().expect("rows").iter().all(|r| r["owner"] == "kate"), "{mine}");
    let (_, theirs) = core.call(Some(KATE), "GET", "/v1/reports/usage?owner=bob", None).await;
    assert_eq!(theirs["rows"], json!([]), "an owner never sees another's use");
    let csv = core.text_as(ADMIN, "/v1/reports/usage?format=csv").await;
    assert_eq!(csv.lines().count(), 1 + rows.len(), "{csv}");
    let request = Request::builder()
        .uri("/v1/reports/usage")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("accept", "text/csv");
    let response = core.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
    let by_accept =
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned();
    assert_eq!(by_accept, csv, "Accept: text/csv asks for the same CSV");
    let (_, none) = core.call(Some(ADMIN), "GET", "/v1/reports/usage?project=other", None).await;
    assert_eq!(none["rows"], json!([]), "filtered by project");
    assert!(csv.contains("\nkate,shop,1,1,"), "{csv}");
    assert_eq!(core.call(Some(ADMIN), "GET", "/v1/reports/usage?from=soon", None).await.0, StatusCode::BAD_REQUEST);
}
