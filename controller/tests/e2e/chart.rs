//! The Helm chart, checked without a cluster: `charts/check.py` lints it, renders it with two
//! sets of values and validates every manifest against the official Kubernetes schemas (its
//! Python tools: [`devdb_testkit::python`]).

#[test]
fn the_chart_lints_renders_and_validates() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/check.py");
    let out = devdb_testkit::python::command("python3")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("chart check: ok") && report.contains("passed for resource deployment/devdb-proxy"),
        "{report}"
    );
}

#[test]
fn every_setting_the_chart_gives_the_controller_is_one_it_reads() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/check.py");
    let out = devdb_testkit::python::command("python3").args([script, "--controller-env"]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect::<Vec<_>>();
    assert!(names.iter().any(|n| n == "DEVDB_CONTROLLER_SECRET_KEY"), "{names:?}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_devdb-controller")).arg("--help").output().expect("help");
    // Wrapped at any space: compare with the whitespace collapsed.
    let help = String::from_utf8_lossy(&help.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(names.iter().any(|n| n == "DEVDB_BACKUP_REPO"), "rendered with backups on too: {names:?}");
    for name in names {
        // An S3 key is read from the environment as the AWS tools read it, not as a flag.
        let read = help.contains(&format!("[env: {name}")) || (name.starts_with("AWS_") && help.contains(&name));
        assert!(read, "the controller has no setting {name}:\n{help}");
    }
}
