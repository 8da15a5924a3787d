//! `devdb-restore`: the restore Job's entrypoint in the database image. Restores a project's dump
//! into an empty data directory (the project's golden volume) exactly as the local runtime does,
//! then leaves PostgreSQL stopped cleanly so the volume can be snapshotted and cloned.
//!
//! Secrets (the project user's password, a source URL with credentials, the masking rules and
//! key, cloud credentials) arrive as files in `--secrets-dir`, never in the environment or the
//! arguments: each is read once and removed, before anything else runs, and the process makes
//! itself undumpable, so nothing it starts (`pg_restore` reading a hostile archive, the server
//! running a dump's code) can read them from a file, from `/proc/1/environ` or from its memory.
//! The Job runs the fetch (the only step that needs the source's credentials) and the build
//! (the only one that reads the dump) in separate containers: `--step fetch` and `--step build`.
//!
//! Exit status 0 on success; on failure the reason goes to stderr and to
//! `/dev/termination-log` when that exists (Kubernetes shows it in the pod status).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use devdb_pgctl::PgBinaries;
use devdb_pgctl::sandbox::{Isolation, Limits as ProcessLimits, Sandbox};
use devdb_restore::masking::MaskPlan;
use devdb_restore::report::Report;
use devdb_restore::{Guard, LimitArgs, Limits, Owner, SourcePolicy, Template};
use devdb_shared::api::Masking;

/// Restores a PostgreSQL dump into a new data directory as a DevDB project template.
///
/// The dump (SQL text, or pg_dump's custom, tar or directory format, optionally gzipped) is run
/// as the project's non-superuser role, never through psql; archives are turned into SQL by
/// pg_restore. Privileged roles in the result fail the restore. With a project's masking, the
/// rules are applied (and verified) before the data directory is left for snapshotting.
///
/// Secrets are files in --secrets-dir, each removed once read: `password` (the project user's),
/// `source` (the dump's URL, when it carries credentials), `masking` (the rules as JSON) and
/// `mask-key`. Cloud credentials for s3:// sources are files named after the AWS CLI's
/// variables (`AWS_ACCESS_KEY_ID`…) in --source-credentials, given to the AWS CLI alone.
///
/// In a restore Job, `--step fetch` runs first with the Job's Secrets mounted read-only in
/// --secrets-from: it reads the source from there and hands the build's secrets on into
/// --secrets-dir (memory the two steps share); `--step build` runs with none of them mounted.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// What to do: `fetch` the source into --download, `build` the data directory from it, or
    /// `all` (both, in this process).
    #[arg(long, env = "DEVDB_RESTORE_STEP", value_enum, default_value_t = Step::All)]
    step: Step,

    /// Where secrets are (files, each removed once read); see above.
    #[arg(long, env = "DEVDB_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,

    /// `fetch`: read-only secrets (a Secret volume) to read the source from and to hand the
    /// build's secrets on from, into --secrets-dir.
    #[arg(long, env = "DEVDB_SECRETS_FROM")]
    secrets_from: Option<PathBuf>,

    /// Cloud credentials for s3:// sources: files named AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, AWS_REGION…, given to the AWS CLI alone.
    #[arg(long, env = "DEVDB_SOURCE_CREDENTIALS")]
    source_credentials: Option<PathBuf>,

    /// The dump, when it is no secret (else the `source` file): http(s)://…, s3://bucket/key or
    /// file:///path. Neither: an empty database.
    #[arg(long, env = "DEVDB_SOURCE", default_value = "")]
    source: String,

    /// Where the fetched dump is kept (default: in the work directory). `fetch` writes it
    /// (`-` for no dump: an empty database), `build` reads it.
    #[arg(long, env = "DEVDB_DOWNLOAD")]
    download: Option<PathBuf>,

    /// The data directory to create (absent or empty).
    #[arg(long, env = "PGDATA")]
    pgdata: Option<PathBuf>,

    /// The project's user (owner of its database, never a superuser).
    #[arg(long, env = "DB_USER", default_value = "")]
    user: String,

    /// The project's database.
    #[arg(long, env = "DB_NAME", default_value = "")]
    database: String,

    /// Fetch from private, loopback and link-local addresses too (admins only).
    #[arg(long, env = "DEVDB_ALLOW_PRIVATE_SOURCES")]
    allow_private_sources: bool,

    /// Scratch space for the download and the server's socket (default: beside --pgdata, on
    /// the same volume; with --build-dir, inside it). Removed at the end.
    #[arg(long, env = "DEVDB_RESTORE_WORK_DIR")]
    work_dir: Option<PathBuf>,

    /// Build everything here (a scratch volume: the download, the server, the masking), then
    /// copy the finished data directory's files into --pgdata. The volume --pgdata is on (and
    /// its snapshot) then holds no freed block of the download or of the rows masking replaced.
    /// What it holds is removed at the end.
    #[arg(long, env = "DEVDB_BUILD_DIR")]
    build_dir: Option<PathBuf>,

    /// PostgreSQL binaries (default: pg_config --bindir, else the newest
    /// /usr/lib/postgresql/*/bin).
    #[arg(long, env = "PG_BIN")]
    pg_bin: Option<PathBuf>,

    /// Where the outcome goes for the controller: on success the scan's findings, the masking
    /// verification and a digest of the rules applied; on failure the reason (written only if
    /// the file exists).
    #[arg(long, env = "DEVDB_TERMINATION_LOG", default_value = "/dev/termination-log")]
    termination_log: PathBuf,

    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Step {
    Fetch,
    Build,
    All,
}

/// The secrets of one run, read from their files.
#[derive(Default)]
struct Secrets {
    password: Option<String>,
    source: Option<String>,
    masking: Option<Masking>,
    mask_key: String,
    /// For the AWS CLI's environment alone.
    aws: Vec<(String, String)>,
}

/// The secrets the build reads (the fetch hands them on).
const BUILD_SECRETS: [&str; 3] = ["password", "masking", "mask-key"];

/// Reads the secret `name` in `dir`, removing the file when `remove`.
fn read_secret(dir: &Path, name: &str, remove: bool) -> anyhow::Result<Option<String>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // Gone before anything else runs; a read-only mount cannot be emptied (a Job's build
            // never has one: its secrets are handed over in memory).
            if remove && let Err(e) = std::fs::remove_file(&path) {
                eprintln!("warning: cannot remove the secret {name} after reading it: {e}");
            }
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read the secret {name}: {e}")),
    }
}

impl Secrets {
    /// Reads (and removes) the secrets of `names` in `dir`.
    fn take(dir: Option<&Path>, names: &[&str]) -> anyhow::Result<Self> {
        let Some(dir) = dir else { return Ok(Self::default()) };
        let mut taken = std::collections::BTreeMap::new();
        // Every file is taken (and gone) before any is judged.
        for name in names {
            if let Some(value) = read_secret(dir, name, true)? {
                taken.insert(*name, value);
            }
        }
        let masking = taken
            .remove("masking")
            .map(|text| parse_masking(&text).map_err(|e| anyhow::anyhow!("the masking secret: {e}")))
            .transpose()?;
        Ok(Self {
            password: taken.remove("password"),
            source: taken.remove("source"),
            masking,
            mask_key: taken.remove("mask-key").unwrap_or_default(),
            aws: Vec::new(),
        })
    }

    /// The fetch's secrets: the source from `from` (read-only) or `dir`; cloud credentials from
    /// `credentials`. The build's secrets in `from` are handed on into `dir` (0600).
    fn for_fetch(from: Option<&Path>, dir: Option<&Path>, credentials: Option<&Path>) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut secrets = Self::default();
        match (from, dir) {
            (Some(from), dir) => {
                secrets.source = read_secret(from, "source", false)?;
                if let Some(dir) = dir {
                    for name in BUILD_SECRETS {
                        let Some(value) = read_secret(from, name, false)? else { continue };
                        let mut file = std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .mode(0o600)
                            .open(dir.join(name))
                            .with_context(|| format!("cannot hand the secret {name} on"))?;
                        std::io::Write::write_all(&mut file, value.as_bytes())?;
                    }
                }
            }
            (None, dir) => secrets.source = Self::take(dir, &["source"])?.source,
        }
        if let Some(credentials) = credentials {
            for entry in std::fs::read_dir(credentials).with_context(|| "cannot read the source credentials")? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with("AWS_")
                    && let Some(value) = read_secret(credentials, &name, false)?
                {
                    secrets.aws.push((name, value));
                }
            }
        }
        Ok(secrets)
    }
}

fn parse_masking(text: &str) -> Result<Masking, String> {
    let masking: Masking = serde_json::from_str(text).map_err(|e| format!("not the masking's JSON: {e}"))?;
    masking.check()?;
    Ok(masking)
}

fn main() -> ExitCode {
    // Before anything: no other process of this user may read this one's memory or environ.
    let _ = nix::sys::prctl::set_dumpable(false);
    let args = Args::parse();
    let work = match (&args.build_dir, &args.work_dir, &args.pgdata) {
        (Some(dir), ..) => dir.join("work"),
        (None, Some(work), _) => work.clone(),
        (None, None, Some(pgdata)) => pgdata.with_extension("restore"),
        (None, None, None) => PathBuf::from("/tmp/devdb-restore"),
    };
    let secrets = match args.step {
        Step::Fetch => Secrets::for_fetch(
            args.secrets_from.as_deref(),
            args.secrets_dir.as_deref(),
            args.source_credentials.as_deref(),
        ),
        Step::Build => Secrets::take(args.secrets_dir.as_deref(), &BUILD_SECRETS),
        Step::All => Secrets::take(args.secrets_dir.as_deref(), &["password", "source", "masking", "mask-key"]),
    };
    let result = secrets.and_then(|secrets| run(&args, &work, secrets));
    if args.step != Step::Fetch {
        let _ = std::fs::remove_dir_all(&work);
        if let Some(dir) = &args.build_dir {
            let _ = std::fs::remove_dir_all(dir.join("pgdata"));
        }
    }
    match result {
        Ok((summary, report)) => {
            println!("{summary}");
            if let Some(report) = report {
                terminate_with(&args.termination_log, &report.encode(devdb_restore::report::LIMIT));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let reason = format!("{error:#}");
            eprintln!("restore failed: {reason}");
            terminate_with(&args.termination_log, &reason);
            ExitCode::FAILURE
        }
    }
}

/// Leaves `message` in the termination log, when there is one.
fn terminate_with(log: &std::path::Path, message: &str) {
    if let Ok(mut log) = std::fs::OpenOptions::new().write(true).truncate(true).open(log) {
        let _ = std::io::Write::write_all(&mut log, message.as_bytes());
    }
}

fn run(args: &Args, work: &Path, secrets: Secrets) -> anyhow::Result<(String, Option<Report>)> {
    let limits = Limits::from(&args.limits);
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let download = args.download.clone().unwrap_or_else(|| work.join("download"));
    // In a Job, the fetch runs first, in a container of its own: the directory is made here.
    if let Some(parent) = download.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let guard = Guard::new(work, None, 0, Some(limits.max_time));
    let fetched = match args.step {
        Step::Build => (download.as_os_str() != "-").then(|| download.clone()),
        Step::Fetch | Step::All => fetch(args, &secrets, &download, limits, &guard)?,
    };
    if args.step == Step::Fetch {
        let what = fetched
            .as_ref()
            .map_or("nothing to fetch (an empty database)".into(), |p| format!("fetched into {}", p.display()));
        if fetched.is_none() {
            std::fs::write(&download, b"").ok();
        }
        return Ok((what, None));
    }
    build(args, work, &secrets, fetched.as_deref(), limits, &guard).map(|(summary, report)| (summary, Some(report)))
}

/// A restore Job's pod may be disrupted (its node drained, consolidated or reclaimed) and run
/// again by the Job. Each build marks its data directory unfinished until it is complete; an
/// attempt that finds the mark removes what the interrupted one left (the data directory, and
/// its work but for this attempt's download) before it starts over. A data directory without
/// the mark is a finished restore: it is never touched. Returns the mark's path.
fn start_over(pgdata: &Path, work: &Path, download: Option<&Path>) -> anyhow::Result<PathBuf> {
    let unfinished = pgdata.with_extension("unfinished");
    if !unfinished.exists() {
        return Ok(unfinished);
    }
    eprintln!("an interrupted attempt left {}: removing it to start over", pgdata.display());
    match std::fs::remove_dir_all(pgdata) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", pgdata.display()));
        }
        _ => {}
    }
    if let Ok(entries) = std::fs::read_dir(work) {
        for entry in entries.flatten() {
            let path = entry.path();
            if Some(path.as_path()) == download {
                continue;
            }
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(unfinished)
}

/// Fetches the source (from the `source` secret, else --source) into `download`; `None` for an
/// empty project.
fn fetch(
    args: &Args,
    secrets: &Secrets,
    download: &Path,
    limits: Limits,
    guard: &Guard,
) -> anyhow::Result<Option<PathBuf>> {
    let source = secrets.source.clone().unwrap_or_else(|| args.source.clone());
    if source.is_empty() {
        return Ok(None);
    }
    let policy = if args.allow_private_sources { SourcePolicy::Any } else { SourcePolicy::PublicOnly };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let fetcher = devdb_restore::Fetcher::new(policy).limits(limits).guard(guard.clone()).aws(secrets.aws.clone());
    let fetched = runtime.block_on(fetcher.fetch(&source, download, |_, _| {}))?;
    Ok(Some(fetched.path))
}

fn build(
    args: &Args,
    work: &Path,
    secrets: &Secrets,
    fetched: Option<&Path>,
    limits: Limits,
    guard: &Guard,
) -> anyhow::Result<(String, Report)> {
    for (what, value) in [("--user", &args.user), ("--database", &args.database)] {
        let ok = value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        anyhow::ensure!(ok, "{what} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)");
    }
    let pgdata = args.pgdata.clone().context("--pgdata (or PGDATA) is needed to build")?;
    let password = secrets.password.clone().context("no password: the secrets directory must hold `password`")?;
    let plan = secrets.masking.as_ref().and_then(|m| MaskPlan::of(m, &secrets.mask_key));
    if plan.is_some() {
        anyhow::ensure!(secrets.mask_key.chars().count() >= 32, "the masking key must have at least 32 characters");
    }
    let unfinished = start_over(&pgdata, work, fetched)?;
    anyhow::ensure!(!pgdata.join("PG_VERSION").exists(), "{} already holds a database", pgdata.display());
    std::fs::write(&unfinished, b"").with_context(|| format!("cannot write {}", unfinished.display()))?;
    let bins = PgBinaries::discover(args.pg_bin.as_deref())?;
    let dump = fetched
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0 || m.is_dir()))
        .map(|path| devdb_restore::prepare(path, work, &limits, guard))
        .transpose()?;
    // The pod is this restore's sandbox: its programs run as this process's user, with an
    // empty environment.
    let built = args.build_dir.as_ref().map_or_else(|| pgdata.clone(), |dir| dir.join("pgdata"));
    let mut sandbox =
        Sandbox::new(bins, &work.join("sandbox"), Isolation::Off { run_as: None }, ProcessLimits::default())?;
    let owner = Owner { user: &args.user, password: &password, database: &args.database };
    let mut template = Template {
        sandbox: &mut sandbox,
        data: built.clone(),
        scratch: work.join("server"),
        masking: plan.as_ref(),
        guard,
    };
    let loaded = template.build(&owner, dump.as_ref())?;
    sandbox.release(&built)?;
    // The pod is this restore's sandbox, so this sealing only catches what goes wrong, not a
    // restore taken over (a database's pod checks what it starts: postgres-db/start.sh).
    devdb_restore::seal::seal(&built, &loaded.pristine)?;
    if built != pgdata {
        // Into an absent or empty directory (a mount point's subdirectory made beforehand).
        let _ = std::fs::remove_dir(&pgdata);
        devdb_restore::files::copy_tree(&built, &pgdata)
            .map_err(devdb_restore::RestoreError::from)
            .with_context(|| format!("cannot copy the data directory into {}", pgdata.display()))?;
    }
    devdb_restore::seal::sync_tree(&pgdata).context("syncing the data directory to disk")?;
    std::fs::remove_file(&unfinished).with_context(|| format!("cannot remove {}", unfinished.display()))?;
    let format = dump.as_ref().map_or("nothing (an empty database)".to_string(), |d| format!("a {:?} dump", d.format));
    let summary = format!(
        "restored {format} into {}: {} statements, {} ownership and privilege statements skipped, {} masking rules applied, {} personal columns found",
        pgdata.display(),
        loaded.statements,
        loaded.skipped,
        plan.as_ref().map_or(0, |p| p.rules.len()),
        loaded.findings.len(),
    );
    let masked_with = plan.as_ref().map(|p| devdb_restore::report::rules_digest(&p.rules));
    Ok((summary, Report { findings: loaded.findings, verified: loaded.verified, masked_with, ..Report::default() }))
}
