//! `devdb-restore`: the restore Job's entrypoint in the database image. Restores a project's dump
//! into an empty data directory (the project's golden volume) exactly as the local runtime does,
//! then leaves PostgreSQL stopped cleanly so the volume can be snapshotted and cloned.
//!
//! Exit status 0 on success; on failure the reason goes to stderr and to
//! `/dev/termination-log` when that exists (Kubernetes shows it in the pod status).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use devdb_pgctl::PgCtl;
use devdb_restore::masking::MaskPlan;
use devdb_restore::report::Report;
use devdb_restore::{LimitArgs, Limits, Owner, SourcePolicy, Template};
use devdb_shared::api::Masking;

/// Restores a PostgreSQL dump into a new data directory as a DevDB project template.
///
/// The dump (SQL text, or pg_dump's custom, tar or directory format, optionally gzipped) is run
/// as the project's non-superuser role, never through psql; archives are turned into SQL by
/// pg_restore. Privileged roles in the result fail the restore. With a project's masking, the
/// rules are applied (and verified) before the data directory is left for snapshotting.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The dump: http(s)://…, s3://bucket/key (AWS CLI, credentials from the environment) or
    /// file:///path. Empty: an empty database.
    #[arg(long, env = "BACKUP_URL", default_value = "", hide_env_values = true)]
    source: String,

    /// The data directory to create (absent or empty).
    #[arg(long, env = "PGDATA")]
    pgdata: PathBuf,

    /// The project's user (owner of its database, never a superuser).
    #[arg(long, env = "DB_USER")]
    user: String,

    /// The user's password (SCRAM).
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    password: String,

    /// The project's database.
    #[arg(long, env = "DB_NAME")]
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

    /// The project's masking as JSON (`{"rules": [...], "verify": true}`, the API's form), applied
    /// before the data directory is left for snapshotting. Needs --mask-key.
    #[arg(long, env = "DEVDB_MASKING", hide_env_values = true, value_parser = parse_masking)]
    masking: Option<Masking>,

    /// The project's masking key (at least 32 characters; never printed).
    #[arg(long, env = "DEVDB_MASK_KEY", default_value = "", hide_env_values = true, hide_default_value = true)]
    mask_key: String,

    /// Where the outcome goes for the controller: on success the scan's findings, the masking
    /// verification and a digest of the rules applied; on failure the reason (written only if
    /// the file exists).
    #[arg(long, env = "DEVDB_TERMINATION_LOG", default_value = "/dev/termination-log")]
    termination_log: PathBuf,

    #[command(flatten)]
    limits: LimitArgs,
}

fn parse_masking(text: &str) -> Result<Masking, String> {
    let masking: Masking = serde_json::from_str(text).map_err(|e| format!("not the masking's JSON: {e}"))?;
    masking.check()?;
    Ok(masking)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let work = match &args.build_dir {
        Some(dir) => dir.join("work"),
        None => args.work_dir.clone().unwrap_or_else(|| args.pgdata.with_extension("restore")),
    };
    let result = restore(&args, &work);
    let _ = std::fs::remove_dir_all(&work);
    if let Some(dir) = &args.build_dir {
        let _ = std::fs::remove_dir_all(dir.join("pgdata"));
    }
    match result {
        Ok((summary, report)) => {
            println!("{summary}");
            terminate_with(&args.termination_log, &report.encode(devdb_restore::report::LIMIT));
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

fn restore(args: &Args, work: &std::path::Path) -> anyhow::Result<(String, Report)> {
    for (what, value) in [("--user", &args.user), ("--database", &args.database)] {
        let ok = value.len() <= 63
            && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        anyhow::ensure!(ok, "{what} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)");
    }
    let plan = args.masking.as_ref().and_then(|m| MaskPlan::of(m, &args.mask_key));
    if plan.is_some() {
        anyhow::ensure!(args.mask_key.chars().count() >= 32, "--mask-key must have at least 32 characters");
    }
    anyhow::ensure!(!args.pgdata.join("PG_VERSION").exists(), "{} already holds a database", args.pgdata.display());
    let pg = PgCtl::discover(args.pg_bin.as_deref())?;
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let dump = if args.source.is_empty() {
        None
    } else {
        let policy = if args.allow_private_sources { SourcePolicy::Any } else { SourcePolicy::PublicOnly };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let limits = Limits::from(&args.limits);
        let dest = work.join("download");
        let fetched = runtime.block_on(devdb_restore::fetch(&args.source, &dest, policy, limits, |_, _| {}))?;
        Some(devdb_restore::prepare(&fetched.path, work, limits.max_source_bytes)?)
    };
    let built = args.build_dir.as_ref().map_or_else(|| args.pgdata.clone(), |dir| dir.join("pgdata"));
    let template = Template { pg: &pg, data: built.clone(), scratch: work.join("server"), masking: plan.as_ref() };
    let owner = Owner { user: &args.user, password: &args.password, database: &args.database };
    let loaded = template.build(&owner, dump.as_ref())?;
    if built != args.pgdata {
        // Into an absent or empty directory (a mount point's subdirectory made beforehand).
        let _ = std::fs::remove_dir(&args.pgdata);
        devdb_restore::files::copy_tree(&built, &args.pgdata)
            .map_err(devdb_restore::RestoreError::from)
            .with_context(|| format!("cannot copy the data directory into {}", args.pgdata.display()))?;
        pg.sync_data_dir(&args.pgdata)?;
    }
    let format = dump.as_ref().map_or("nothing (an empty database)".to_string(), |d| format!("a {:?} dump", d.format));
    let summary = format!(
        "restored {format} into {}: {} statements, {} ownership and privilege statements skipped, {} masking rules applied, {} personal columns found",
        args.pgdata.display(),
        loaded.statements,
        loaded.skipped,
        plan.as_ref().map_or(0, |p| p.rules.len()),
        loaded.findings.len(),
    );
    let masked_with = plan.as_ref().map(|p| devdb_restore::report::rules_digest(&p.rules));
    Ok((summary, Report { findings: loaded.findings, verified: loaded.verified, masked_with, ..Report::default() }))
}
