//! The Helm chart, checked without a cluster: `charts/check.py` lints it, renders it with two
//! sets of values and validates every manifest against the official Kubernetes schemas.

#[test]
fn the_chart_lints_renders_and_validates() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}\n(needs: python3 -m pip install helm-python-sdk kubernetes-validate)");
    assert!(
        report.contains("chart check: ok") && report.contains("passed for resource deployment/devdb-proxy"),
        "{report}"
    );
}
