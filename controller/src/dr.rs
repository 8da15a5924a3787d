//! `devdb dr` (`devdb-controller dr`), and `devdb up --restore-from`: disaster recovery of a
//! local installation from its backup repository, on the machine, with no controller running on
//! the data directory. `status` lists what the repository's state document holds; `restore`
//! brings databases back into a new data directory (see [`devdb_local::dr`]). Both need the
//! lost installation's backup secret: the repository is unreadable without it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use devdb_local::LocalArgs;
use devdb_local::dr::restore::{Restored, Which};
use devdb_shared::Name;

#[derive(Debug, Args)]
pub struct DrArgs {
    #[command(subcommand)]
    command: DrCommand,
}

#[derive(Debug, Subcommand)]
enum DrCommand {
    /// What the repository holds: the projects and databases of the installation that wrote it,
    /// as of its last change.
    Status {
        #[command(flatten)]
        from: RecoverFrom,
        /// Print JSON (without passwords) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restores databases into a new data directory (--data-dir), each from its latest backup with
    /// everything archived since, under its name, owner, password and settings. Then start it with
    /// `devdb up --data-dir DIR --backup-repo DIR`.
    Restore {
        #[command(flatten)]
        from: RecoverFrom,
        /// Every database with backups.
        #[arg(long, conflicts_with = "names", required_unless_present = "names")]
        all: bool,
        /// These databases.
        names: Vec<Name>,
        #[command(flatten)]
        local: Box<LocalArgs>,
    },
}

/// Where an installation's state and backups are, and the key they open with.
#[derive(Debug, Clone, Args)]
pub struct RecoverFrom {
    /// The backup repository (a directory) the lost installation used as --backup-repo.
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// A copy of the lost installation's <data-dir>/backup/secret (its backups are encrypted with
    /// keys derived from it).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
}

pub async fn run(args: DrArgs) -> anyhow::Result<()> {
    match args.command {
        DrCommand::Status { from, json } => status(&from, json),
        DrCommand::Restore { from, all, names, mut local } => {
            let which = if all { Which::All } else { Which::Names(names) };
            let failed = restore(&mut local, &from, &which).await?;
            if failed > 0 {
                anyhow::bail!("{failed} database(s) not restored (see above)");
            }
            println!(
                "start it with: devdb up --data-dir {} --backup-repo {}",
                local.data_dir.display(),
                from.repo.display()
            );
            Ok(())
        }
    }
}

fn status(from: &RecoverFrom, json: bool) -> anyhow::Result<()> {
    let secret = devdb_local::dr::read_key(&from.key_file)?;
    let repository = devdb_backup::Repository::Posix(std::path::absolute(&from.repo)?);
    let document = devdb_local::dr::read(&repository, &secret)?;
    if json {
        let databases: Vec<_> = document
            .databases
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.record.name, "owner": d.record.owner, "project": d.record.project,
                    "backup": d.record.backup, "stanzas": d.stanzas,
                })
            })
            .collect();
        let projects: Vec<_> =
            document.projects.iter().map(|p| serde_json::json!({ "name": p.name, "owner": p.owner })).collect();
        let out = serde_json::json!({ "writtenAt": document.written_at, "projects": projects, "databases": databases });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("state as of {} ({} project(s))", document.written_at, document.projects.len());
    for p in &document.projects {
        println!("  project {:<24} owner {}", p.name, p.owner);
    }
    println!("{:<24} {:<16} {:<16} LAST BACKUP", "DATABASE", "OWNER", "PROJECT");
    for d in &document.databases {
        let backup = match &d.record.backup {
            None => "no backups: cannot be restored".to_string(),
            Some(b) => b.last_backup_at.clone().unwrap_or_else(|| "none yet (archived WAL only)".into()),
        };
        println!("{:<24} {:<16} {:<16} {backup}", d.record.name, d.record.owner, d.record.project);
    }
    Ok(())
}

/// Restores `which` databases of the installation `from` holds into `local`'s data directory,
/// whose repository becomes `from.repo` (the restored databases archive into it). Prints each
/// one's outcome; how many failed.
///
/// # Errors
/// When nothing can be restored: the repository or the key, another backup secret in the data
/// directory, a name it does not hold.
pub async fn restore(local: &mut LocalArgs, from: &RecoverFrom, which: &Which) -> anyhow::Result<usize> {
    let repo = std::path::absolute(&from.repo)?;
    match &local.backups.backup_repo {
        Some(given) if std::path::absolute(given)? != repo => anyhow::bail!(
            "--backup-repo {given} is not --repo {}: restored databases archive into the repository they come from",
            repo.display()
        ),
        _ => local.backups.backup_repo = Some(repo.to_string_lossy().into_owned()),
    }
    let secret = devdb_local::dr::read_key(&from.key_file)?;
    let opened = devdb_local::Local::open(local, devdb_core::reconcile::ReconcilerConfig::default())?;
    let repository = opened.reconciler.runtime().local_backups().repository().clone();
    let document = devdb_local::dr::read(&repository, &secret)?;
    eprintln!("restoring from the state as of {}", document.written_at);
    let outcomes = devdb_local::dr::restore::restore(&opened, &document, &secret, which)
        .await
        .with_context(|| format!("restoring into {}", opened.data_dir.display()))?;
    let mut failed = 0;
    for outcome in &outcomes {
        match &outcome.result {
            Ok(Restored::Restored) => println!("restored {}", outcome.name),
            Ok(Restored::AlreadyHere) => println!("{} is here already: left as it is", outcome.name),
            Err(error) => {
                failed += 1;
                println!("{} not restored: {error}", outcome.name);
            }
        }
    }
    println!(
        "{} of {} database(s) restored; projects are restored again from their sources",
        outcomes.len() - failed,
        outcomes.len()
    );
    Ok(failed)
}
