//! API tokens and the CLI: owners see and change only their own databases, see no source
//! secrets and reach no private address through a source; the data directory keeps its secrets
//! private; the CLI accepts the new and the older spellings, prints JSON for scripts, and fails
//! with one line.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";
const KATE: &str = "kate-token-0123456789";
const BOB: &str = "bob-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_databases_to_their_owner() {
    let tokens = tempfile::NamedTempFile::new().expect("tokens");
    let file = json!({"tokens": [{"token": KATE, "owner": "kate"}, {"token": BOB, "owner": "bob"}]});
    std::fs::write(tokens.path(), file.to_string()).expect("write");
    let mut devdb =
        DevDb::start_with(&["--tokens-file", &tokens.path().to_string_lossy(), "--admin-token", ADMIN]).await;

    // Status codes and scoping are the core's tests' (in-process); this one proves what only the
    // whole product shows: the CLI, the logs, the proxy, a restore that really fetches.
    devdb.token = Some(ADMIN.into());
    assert_eq!(devdb.call(Method::POST, "/v1/projects", Some(json!({"name": "shop"}))).await.0, 201);
    devdb.settled_project("shop").await;

    // A source with a password and a presigned query; it cannot be reached here, so its restore
    // fails with an error that names the source.
    let secret_url = "https://svc:hunter2@dumps.invalid/p.dump?X-Amz-Credential=AKIAXX&X-Amz-Signature=f00dfeed";
    let secret_source = json!({"name": "private", "backupLocation": secret_url});
    assert_eq!(devdb.call(Method::POST, "/v1/projects", Some(secret_source)).await.0, 201);
    let failed = devdb.settled_project("private").await;
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("dumps.invalid")), "{failed:?}");

    devdb.token = Some(KATE.into());
    let shown = "https://dumps.invalid/p.dump?X-Amz-Credential=…&X-Amz-Signature=…";
    let (_, private) = devdb.call(Method::GET, "/v1/projects/private", None).await;
    assert_eq!(private["backupLocation"], shown, "no one sees source credentials");
    let (_, compat) = devdb.call(Method::GET, "/projects/private", None).await;
    assert_eq!(compat["backupLocation"], shown);
    assert_eq!(compat["defaultCredentials"]["password"], "", "nor the project's password");
    let (_, all) = devdb.call(Method::GET, "/v1/projects", None).await;
    let (_, all_compat) = devdb.call(Method::GET, "/projects", None).await;
    let (ok, cli_out, _) = devdb.cli(&["project", "show", "private", "--json"]).await;
    assert!(ok);
    for (path, text) in
        [("/v1", all.to_string()), ("/projects", all_compat.to_string()), ("cli", cli_out), ("log", devdb.log())]
    {
        for secret in ["hunter2", "AKIAXX", "f00dfeed"] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
    }

    // An owner's source may not reach inside the platform: refused at once, naming the policy.
    let api_port = devdb.api.rsplit(':').next().unwrap_or_default().to_string();
    for (name, url, kind) in [
        ("metrics", format!("http://127.0.0.1:{api_port}/metrics"), "a loopback address"),
        ("by-name", format!("http://localhost:{api_port}/metrics"), "a loopback address"),
        ("cloud", "http://169.254.169.254/latest/meta-data/".to_string(), "a link-local address"),
        ("inside", "https://10.1.2.3/dump.sql".to_string(), "a private address"),
        ("six", "http://[::1]:8080/x".to_string(), "a loopback address"),
    ] {
        let (status, body) =
            devdb.call(Method::POST, "/v1/projects", Some(json!({"name": name, "backupLocation": url}))).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{url}: {body}");
        assert!(message.contains(kind) && message.contains("--allow-private-sources"), "{url}: {message}");
    }
    // A malformed URL is refused without being echoed (its secrets cannot be told apart).
    let malformed = json!({"name": "typo", "backupLocation": "https://svc:hun/ter2@dumps.example.com/x"});
    let (status, body) = devdb.call(Method::POST, "/v1/projects", Some(malformed)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("not a valid URL") && !body.to_string().contains("ter2"), "{body}");
    let (status, body) = devdb.create_database("kate-pg", "shop").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["owner"], "kate", "an owner token creates for its owner");

    devdb.token = Some(BOB.into());
    assert_eq!(devdb.create_database("bob-pg", "shop").await.0, 201);

    devdb.token = Some(ADMIN.into());
    // Kate's database works through the proxy (which follows the feed with the admin token).
    let kate = devdb.database("kate-pg").await.expect("kate");
    drop(devdb.connect_retrying(&kate).await);

    devdb.token = Some(KATE.into());
    let (ok, out, err) = devdb.cli(&["db", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "the CLI shows kate hers alone: {out}");
    assert!(!devdb.log().contains(&kate.password), "passwords never reach the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_accepts_new_and_old_spellings_and_fails_with_one_line() {
    let devdb = DevDb::start().await;
    let config = devdb.dir.path().join("cli.json");
    // The older CLI's spelling; remembered in the config file (DEVDB_SERVER unset).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
        .args(["config", "set-api", &devdb.api])
        .env("DEVDB_CONFIG", &config)
        .env_remove("DEVDB_SERVER")
        .output()
        .await
        .expect("devdb");
    assert!(out.status.success());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
        .args(["project", "create", "legacy", "--type", "postgres", "--version", "15"])
        .env("DEVDB_CONFIG", &config)
        .env_remove("DEVDB_SERVER")
        .output()
        .await
        .expect("devdb");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));

    let (ok, out, err) = devdb.cli(&["db", "create", "old-style", "--project", "legacy", "--json"]).await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(created["status"], "running");
    let (ok, out, _) = devdb.cli(&["project", "list"]).await;
    assert!(ok && out.contains("legacy") && out.contains("NAME"), "{out}");

    // db connect runs psql through the proxy, verifying the dev CA.
    let (ok, out, err) = devdb.cli(&["db", "connect", "old-style", "--", "-Atc", "SELECT current_database()"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "legacy");

    for (args, expected) in [
        (vec!["db", "show", "nope"], "database \"nope\" does not exist"),
        (vec!["db", "create", "Bad_Name", "--project", "legacy"], "lower-case"),
        (vec!["project", "create", "x", "--from", "s3://b/x.dump"], "kube runtime"),
    ] {
        let (ok, _, err) = devdb.cli(&args).await;
        assert!(!ok, "{args:?}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: ") && first.contains(expected), "{args:?}: {err}");
    }
    let (_, _, err) = devdb.cli(&["db", "reset", "nope"]).await;
    assert_eq!(err.trim().lines().count(), 1, "API failures are one line: {err}");
    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
        .args(["db", "list"])
        .env("DEVDB_SERVER", format!("http://127.0.0.1:{}", devdb_testkit::free_port()))
        .output()
        .await
        .expect("devdb");
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success() && err.contains("cannot reach the DevDB API"), "{err}");
}

/// Every path under the data directory after a run: secrets (the state database with SQLite's
/// files beside it, private keys) are 0600 in 0700 directories, and nothing is readable or
/// writable by other users. Directories on the way to instances may be passed through (0711).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_keeps_its_secrets_private() {
    use std::os::unix::fs::PermissionsExt;
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let devdb = DevDb::start().await;
    devdb.create_project("shop", &files.url("custom.dump")).await;
    devdb.settled_project("shop").await;
    let (status, body) = devdb.create_database("kate-pg", "shop").await;
    assert_eq!(status, 201, "{body}");

    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).expect("meta").permissions().mode() & 0o7777;
    let root = &devdb.data_dir;
    for secret in ["state/state.db", "state/state.db-wal", "state/state.db-shm", "certs/ca.key", "certs/server.key"] {
        let path = root.join(secret);
        assert_eq!(mode(&path), 0o600, "{secret}");
        assert_eq!(mode(path.parent().expect("dir")), 0o700, "the directory of {secret}");
    }
    let mut stack = vec![root.clone()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read").flatten() {
            let path = entry.path();
            let file_type = entry.file_type().expect("type");
            let m = mode(&path);
            checked += 1;
            if file_type.is_dir() {
                assert_eq!(m & 0o066, 0, "{} is {m:o}: others may at most pass through", path.display());
                stack.push(path);
            } else if !file_type.is_symlink() && mode(&dir) & 0o077 != 0 {
                assert_eq!(m & 0o077, 0, "{} is {m:o} in a directory others may enter", path.display());
            }
        }
    }
    assert!(checked > 100, "the walk saw the instances' files too ({checked})");
}

/// `devdb up` with owner tokens only (no admin token anywhere): its own proxy still follows the
/// routes, so an owner's new database is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devdb_up_routes_for_its_proxy_whatever_tokens_are_configured() {
    let tokens = tempfile::NamedTempFile::new().expect("tokens");
    std::fs::write(tokens.path(), json!({"tokens": [{"token": KATE, "owner": "kate"}]}).to_string()).expect("write");
    let mut devdb = DevDb::start_with(&["--tokens-file", &tokens.path().to_string_lossy()]).await;
    devdb.token = Some(KATE.into());
    assert_eq!(devdb.call(Method::POST, "/v1/projects", Some(json!({"name": "empty"}))).await.0, 201);
    devdb.settled_project("empty").await;
    let (status, body) = devdb.create_database("kate-pg", "empty").await;
    assert_eq!(status, 201, "{body}");
    let kate = devdb.database("kate-pg").await.expect("kate");
    let client = devdb.connect_retrying(&kate).await;
    assert_eq!(query_one(&client, "SELECT current_user").await, "app");
    assert_eq!(devdb.call(Method::GET, "/v1/routes", None).await.0, 403, "the feed's token is not the owner's");
}

/// A PostgreSQL server runs its owner's code: nothing of the controller's environment (an admin
/// token given as DEVDB_CONTROLLER_ADMIN_TOKEN, say) may be in its `/proc/<pid>/environ`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_postgresql_process_inherits_the_controllers_environment() {
    let mut devdb = DevDb::start_with_env(&[], &[("DEVDB_CONTROLLER_ADMIN_TOKEN", ADMIN)]).await;
    devdb.token = Some(ADMIN.into());
    let (status, body) =
        devdb.call(reqwest::Method::POST, "/v1/projects", Some(serde_json::json!({"name": "shop"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(devdb.settled_project("shop").await.status, devdb_shared::api::ProjectStatus::Ready);
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let pid_file = devdb.data_dir.join("databases/kate-pg/data/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let pid = pid.lines().next().expect("pid").trim().to_string();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains(ADMIN), "the admin token reached a postmaster");
    let names: Vec<&str> = environ.split('\0').filter(|v| !v.is_empty()).filter_map(|v| v.split('=').next()).collect();
    assert!(names.iter().all(|n| !n.starts_with("DEVDB_")), "{names:?}");
}
