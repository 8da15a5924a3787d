//! The Python tools the chart and manifest checks run (helm-python-sdk, kubernetes-validate,
//! cel-python, PyYAML) and the S3 store of the backup tests (moto's server, [`crate::s3`]),
//! installed on first use into a virtual environment under the target directory, at pinned
//! versions: the test command needs nothing installed by hand, only `python3` with its `venv`
//! module (Debian: `python3-venv`) and a reachable package index the first time. Test
//! processes run at once share one installation, made under a file lock.

use std::path::{Path, PathBuf};

/// What is installed, pinned (the versions the checks were written against).
pub const PACKAGES: &[&str] = &[
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "cel-python==0.5.0",
    "PyYAML==6.0.3",
    "moto[server]==5.2.6",
];

/// The environment's `bin` directory, installing it first if need be: put it first on `PATH`
/// so scripts find `python3` and `kubernetes-validate` there.
///
/// # Panics
/// When the environment cannot be made, saying what to install.
pub fn tools() -> PathBuf {
    let venv = target_dir().join("python-tools");
    let bin = venv.join("bin");
    // A marker per package set: a changed pin installs again.
    let marker = venv.join(format!(".installed-{:016x}", fingerprint()));
    if marker.exists() {
        return bin;
    }
    std::fs::create_dir_all(target_dir()).expect("the target directory");
    let lock = std::fs::File::create(target_dir().join("python-tools.lock")).expect("the lock file");
    lock.lock().expect("the lock");
    if !marker.exists() {
        install(&venv, &marker);
    }
    bin
}

/// A command running `program` from the environment (`python3`, `kubernetes-validate`), with
/// the environment first on its `PATH`.
pub fn command(program: &str) -> std::process::Command {
    let bin = tools();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path))).expect("a PATH");
    let mut cmd = std::process::Command::new(bin.join(program));
    cmd.env("PATH", path).env("VIRTUAL_ENV", bin.parent().unwrap_or(&bin));
    cmd
}

fn install(venv: &Path, marker: &Path) {
    let _ = std::fs::remove_dir_all(venv);
    let run = |cmd: &mut std::process::Command, what: &str, hint: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}; {hint}"));
        assert!(
            out.status.success(),
            "{what} failed ({hint}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        std::process::Command::new("python3").args(["-m", "venv"]).arg(venv),
        "python3 -m venv",
        "the tests need python3 with its venv module (Debian: apt-get install python3-venv)",
    );
    run(
        std::process::Command::new(venv.join("bin/python3"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES),
        "pip install of the test tools",
        "it needs the package index (PyPI) the first time",
    );
    std::fs::write(marker, PACKAGES.join("\n")).expect("the marker");
}

fn fingerprint() -> u64 {
    // FNV-1a: stable across processes and builds, unlike the standard library's hashers.
    PACKAGES.join("\n").bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The target directory the running test was built into.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("the test binary");
    exe.ancestors().nth(3).map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}
