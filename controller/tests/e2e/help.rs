//! Asking a command for help does what it says and nothing else: `devdb down --help` (whose
//! flags are the controller's) prints both helps and never reaches the API.

#[tokio::test]
async fn down_help_prints_help_and_stops_nothing() {
    // An API that counts who comes: a `down` would list the databases here first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    let visits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = visits.clone();
    let api = tokio::spawn(async move {
        while let Ok((_, _)) = listener.accept().await {
            counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    for help in ["--help", "-h"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
            .args(["--server", &server, "down", help])
            .env_remove("DEVDB_TOKEN")
            .output()
            .await
            .expect("devdb down --help");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("Stop every database"), "the CLI's own help: {stdout}");
        assert!(stdout.contains("--data-dir"), "then the controller's: {stdout}");
    }
    api.abort();
    assert_eq!(visits.load(std::sync::atomic::Ordering::SeqCst), 0, "help reached the API");
}
