//! End to end: PostgreSQL parameters set with `devdb db set` reach the server (a reload, or a
//! restart for those read only at start) and survive a reset and a sleep.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_set_with_the_cli_reach_postgresql_by_reload_or_restart_and_survive_reset_and_sleep() {
    let devdb = with_empty_project(&["--sample-every", "1s"]).await;
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let show = |setting: &'static str| {
        let devdb = &devdb;
        async move {
            let database = devdb.database("kate-pg").await.expect("exists");
            let client = devdb.connect_retrying(&database).await;
            query_one(&client, &format!("SHOW {setting}")).await
        }
    };
    assert_eq!(show("work_mem").await, "4MB", "the default");
    // A reload or restart takes a moment after the answer: a new session sees it.
    let becomes = |setting: &'static str, value: &'static str| {
        let (devdb, show) = (&devdb, &show);
        async move {
            for _ in 0..600 {
                if show(setting).await == value {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{setting} never became {value}:\n{}", devdb.log());
        }
    };

    let (ok, out, err) = devdb.cli(&["db", "set", "kate-pg", "work_mem=64MB", "statement_timeout=5s"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("work_mem = 64MB"), "{out}");
    becomes("work_mem", "64MB").await;
    assert_eq!(show("statement_timeout").await, "5s");
    let (ok, _, err) = devdb.cli(&["db", "set", "kate-pg", "fsync=off"]).await;
    assert!(!ok && err.contains("cannot be set"), "{err}");

    // Read only at start: the instance restarts with it.
    let (ok, _, err) = devdb.cli(&["db", "set", "kate-pg", "max_connections=42"]).await;
    assert!(ok, "{err}");
    becomes("max_connections", "42").await;

    // Kept across a reset, and a sleep and wake.
    let (status, body) = devdb.call(reqwest::Method::POST, "/v1/databases/kate-pg/reset?wait=true", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((show("work_mem").await, show("max_connections").await), ("64MB".into(), "42".into()));
    devdb.stop("kate-pg").await;
    let (ok, _, err) = devdb.cli(&["db", "set", "kate-pg", "work_mem="]).await;
    assert!(ok, "{err}");
    assert_eq!(show("work_mem").await, "4MB", "changed while asleep: the wake starts with it");

    // Sampled every second (the local runtime reads the real server): two samples of the running
    // instance give rates. And reported: the CLI's CSV is the API's.
    let mut metrics = serde_json::Value::Null;
    for _ in 0..600 {
        metrics = devdb.call(reqwest::Method::GET, "/v1/databases/kate-pg/metrics", None).await.1;
        let points = metrics["points"].as_array().cloned().unwrap_or_default();
        if points.iter().any(|p| p["sizeBytes"].as_u64() > Some(1 << 20) && p["commits"].as_f64().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points = metrics["points"].as_array().cloned().unwrap_or_default();
    assert!(points.iter().any(|p| p["commits"].as_f64().is_some()), "{metrics}\n{}", devdb.log());
    let (ok, csv, err) = devdb.cli(&["report", "--csv"]).await;
    assert!(ok, "{err}");
    assert_eq!(csv, devdb.text("/v1/reports/usage?format=csv").await);
    assert!(csv.contains("\ndefault,shop,1,0,"), "kate-pg created, not deleted: {csv}");
    let (ok, table, err) = devdb.cli(&["report", "--owner", "default"]).await;
    assert!(ok && table.contains("RUNNING HOURS") && table.contains("shop"), "{table}{err}");
    let (ok, _, err) = devdb.cli(&["report", "--from", "someday"]).await;
    assert!(!ok && err.contains("is not a date"), "{err}");
}
