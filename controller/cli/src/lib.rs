//! The `devdb` command: a client of the REST API. It links neither a store nor a runtime: `devdb
//! up` hands over to `devdb-controller up`, installed beside it.
//!
//! Human-readable tables by default, `--json` for scripts, progress while waiting, and a
//! one-line error with a non-zero exit status on failure.

mod client;
pub mod http;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use devdb_shared::Name;
use devdb_shared::api::{
    CreateDatabase, CreateProject, CredentialsRequest, Database, DatabaseStatus, DbType, MaskRule, Project,
    ProjectStatus,
};
use devdb_shared::reports::{ScanReport, Usage, UsageReport};

pub use client::{ApiClient, ClientError, Settings};

/// DevDB: your own PostgreSQL database, cloned in seconds from your project's data.
#[derive(Debug, Parser)]
#[command(name = "devdb", version, max_term_width = 100)]
pub struct Cli {
    /// API server URL (default: the one saved with `devdb config set-server`, else
    /// http://127.0.0.1:8080).
    #[arg(long, global = true, env = "DEVDB_SERVER")]
    pub server: Option<String>,

    /// API token.
    #[arg(long, global = true, env = "DEVDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run DevDB locally: the controller (local runtime) and the proxy, with dev certificates.
    /// Runs `devdb-controller up` (see its --help for the flags).
    #[command(disable_help_flag = true)]
    Up {
        /// Flags of `devdb-controller up` (--data-dir, --api-listen, --proxy-listen, --domain…).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Disaster recovery from a backup repository, on the machine (no controller running):
    /// `dr status --repo DIR --key-file F`, `dr restore --repo DIR --key-file F (--all |
    /// NAME…)`. Runs `devdb-controller dr` (see its --help for the flags).
    #[command(disable_help_flag = true)]
    Dr {
        /// `status` or `restore`, and their flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Generate a development CA and a wildcard certificate `*.<domain>` for the proxy.
    Certs {
        /// The proxy's domain: the certificate covers `*.<domain>` and `<domain>`.
        #[arg(long, default_value = "db.devdb.localhost")]
        domain: devdb_shared::Domain,
        /// Directory for ca.crt, ca.key, server.crt, server.key.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Client settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Projects: data sources restored once and cloned by databases.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Databases: your own clones of a project's data.
    #[command(subcommand, alias = "database")]
    Db(DbCommand),
    /// Each owner's databases, running ones and disk, against their quotas (yours only with an
    /// owner token).
    Usage,
    /// Use per owner and project over a period: databases created and deleted, running hours,
    /// peak disk and connections (yours only with an owner token).
    Report {
        /// First day, UTC (2026-11-01). Default: 29 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// Last day, UTC, inclusive. Default: today.
        #[arg(long)]
        to: Option<String>,
        /// One owner only.
        #[arg(long)]
        owner: Option<String>,
        /// Print CSV (one row per owner and project) instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Stop every database (they keep their data; a connection or `devdb db start` wakes
    /// one). With no controller answering on this machine (after `devdb up` stopped), runs
    /// `devdb-controller down` on the data directory instead.
    #[command(disable_help_flag = true)]
    Down {
        /// Flags of `devdb-controller down` (--data-dir …), used when no controller answers.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Remember the API server URL (DEVDB_SERVER still wins).
    #[command(alias = "set-api")]
    SetServer { url: String },
    /// Remember an API token (DEVDB_TOKEN still wins).
    SetToken { token: String },
    /// Show the settings in effect and where they come from.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project and restore its dump (waits and shows progress unless --no-wait).
    Create {
        name: Name,
        /// The dump: https://…, http://… or file://… (plain, custom, tar or directory; gzip ok).
        /// Without it, the project's databases start empty.
        #[arg(long, visible_alias = "backup-location")]
        from: Option<String>,
        /// PostgreSQL major version.
        #[arg(long = "version", value_name = "VERSION")]
        db_version: Option<String>,
        /// Database type (only postgres).
        #[arg(long = "type", value_name = "TYPE", default_value = "postgres", value_parser = ["postgres"])]
        db_type: String,
        #[arg(long)]
        owner: Option<String>,
        /// The user the data is restored for (default: app).
        #[arg(long, requires = "database")]
        username: Option<String>,
        /// The database the data is restored into (default: the project name).
        #[arg(long, requires = "username")]
        database: Option<String>,
        /// Its databases stop after this long without a session (e.g. 30m, 2h; 0s: never).
        /// Default: the controller's (30 minutes).
        #[arg(long, value_name = "DURATION")]
        idle_stop_after: Option<String>,
        /// How long its databases live unless created with --ttl (e.g. 72h). Default: for ever.
        #[arg(long, value_name = "DURATION")]
        default_ttl: Option<String>,
        #[command(flatten)]
        backup: Box<ProjectBackup>,
        /// Return at once instead of waiting for the restore.
        #[arg(long)]
        no_wait: bool,
    },
    /// List projects.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a project.
    Show { name: String },
    /// Delete a project (it must have no databases).
    #[command(alias = "rm")]
    Delete { name: String },
    /// Restore the project's source again into a new snapshot; databases keep theirs until reset.
    Refresh {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Make one of the project's kept snapshot generations its current one (by default the one
    /// before the current): new databases and resets are made of it; databases keep their data
    /// until reset. `devdb project show` lists the generations kept.
    Rollback {
        name: String,
        /// The generation to return to (a later one too, to undo a rollback).
        #[arg(long = "to", value_name = "GENERATION")]
        to: Option<u64>,
    },
    /// The columns of the project's data that look personal (found when it was restored, before
    /// masking), with a suggested rule for each and whether a rule covers it.
    Scan {
        name: String,
        /// Print the suggested rules of the uncovered columns as JSON, ready for
        /// `devdb project masking NAME --file`.
        #[arg(long, conflicts_with = "json")]
        rules: bool,
    },
    /// Show the project's masking rules, or set them from a JSON file (`{"rules": [{"table",
    /// "column", "strategy"}…]}` or just the list); new rules restore the project again, masked.
    /// Strategies: email, name, phone, address, hash, null, constant (with "value"), redact,
    /// dateShift (with "days"), keep; "jsonPath": ["key", …] masks a value inside a JSON column.
    Masking {
        name: String,
        /// The rules to set (`-` reads standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "rotate_key")]
        file: Option<PathBuf>,
        /// Give the project a new masking key (the old one is gone): it restores again, masked
        /// under the new key, and no clone is made meanwhile.
        #[arg(long)]
        rotate_key: bool,
        #[arg(long)]
        no_wait: bool,
    },
}

/// A project's default for the backups of its new databases.
#[derive(Debug, clap::Args)]
pub struct ProjectBackup {
    /// Back up its new databases unless they are created with --no-backup (the local
    /// runtime). Default: only protected ones.
    #[arg(long, overrides_with = "no_backup")]
    backup: bool,
    /// Back up none of its new databases unless they are created with --backup, protected
    /// ones included.
    #[arg(long)]
    no_backup: bool,
    /// How often its new databases are backed up: hourly, daily (the default) or weekly.
    #[arg(long, value_name = "SCHEDULE", requires = "backup")]
    backup_schedule: Option<String>,
    /// How long their full backups are kept, in days (e.g. 7d). Default: the two newest.
    #[arg(long, value_name = "DAYS", requires = "backup")]
    backup_retention: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a database from a project's snapshot (or from another database's backups at a
    /// moment); waits, then prints how to connect.
    Create {
        name: Name,
        /// Its project (with --from-database: the source's).
        #[arg(long, short, required_unless_present = "from_database")]
        project: Option<Name>,
        #[arg(long)]
        owner: Option<String>,
        /// Delete it after this long (e.g. 72h; `devdb db extend` gives more). Default: the
        /// project's default, else never.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Never stop it for idleness nor delete it at expiry.
        #[arg(long)]
        protected: bool,
        /// Stop it after this long without a session (0s: never); a connection wakes it.
        /// Default: the project's.
        #[arg(long, value_name = "DURATION")]
        idle_stop_after: Option<String>,
        /// Archive its WAL and back it up on a schedule, so it can be restored to a moment
        /// (pgBackRest; the local runtime). Default: the project's (`devdb project show`), else
        /// on with --protected.
        #[arg(long, overrides_with = "no_backup")]
        backup: bool,
        /// No backups, even with --protected.
        #[arg(long)]
        no_backup: bool,
        /// With backups: how often, hourly, daily or weekly. Default: the project's, else daily.
        #[arg(long, value_name = "SCHEDULE", conflicts_with = "no_backup")]
        backup_schedule: Option<String>,
        /// With backups: how long full backups are kept, in days (e.g. 7d). Default: the
        /// project's, else the two newest.
        #[arg(long, value_name = "DAYS", conflicts_with = "no_backup")]
        backup_retention: Option<String>,
        /// Make it from this database's backups (yours, with backups on) instead of the
        /// project's snapshot; the source keeps running.
        #[arg(long, value_name = "NAME", requires = "at")]
        from_database: Option<Name>,
        /// With --from-database: the moment to restore it to (RFC 3339, e.g.
        /// 2026-12-06T10:15:00Z), within its restorable window (`devdb db show`).
        #[arg(long, value_name = "TIME", requires = "from_database")]
        at: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// List databases.
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show a database and its connection details.
    Show { name: String },
    /// Delete a database and its data.
    #[command(alias = "rm")]
    Delete {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop the database: it keeps its data and credentials and uses no memory; connecting to
    /// it (or `devdb db start`) wakes it.
    Stop {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Start a stopped database.
    Start {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Give the database a new time to live, from now.
    Extend {
        name: String,
        /// E.g. 72h, 7days.
        #[arg(long, value_name = "DURATION")]
        ttl: String,
    },
    /// Set PostgreSQL parameters (work_mem, statement_timeout, log_min_duration_statement,
    /// max_connections, …; `key=` puts one back to its default). Applied at once: a reload, or
    /// a restart for those PostgreSQL reads only at start. Kept across reset.
    Set {
        name: String,
        /// `key=value` pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Turn the database's backups on or off, or change how often they are taken and how long
    /// they are kept (the local runtime). Turning them on or off restarts it: on, it archives
    /// its WAL into a stanza of its own and is backed up at once; off, it stops archiving and
    /// what was backed up stays in the repository.
    #[command(group = clap::ArgGroup::new("switch").required(true))]
    Backup {
        name: String,
        /// Back it up (again: keeps them on, changing what is given).
        #[arg(long, group = "switch")]
        on: bool,
        /// No more backups.
        #[arg(long, group = "switch")]
        off: bool,
        /// Hourly, daily or weekly (default: as it is, else the project's, else daily).
        #[arg(long, value_name = "SCHEDULE", requires = "on")]
        schedule: Option<String>,
        /// How long full backups are kept, in days (e.g. 7d; default: as it is, else the
        /// project's, else the two newest).
        #[arg(long, value_name = "DAYS", requires = "on")]
        retention: Option<String>,
    },
    /// Exempt the database from idle stop and expiry (--off: no longer).
    Protect {
        name: String,
        #[arg(long)]
        off: bool,
    },
    /// Clone the database again from its project's snapshot (same name and credentials).
    Reset {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Restore the database in place to a moment of its restorable window (`devdb db show`),
    /// from its own backups: everything written since is replaced, and the state it had is
    /// kept (`--undo` brings it back). Asks for confirmation unless --yes.
    #[command(group = clap::ArgGroup::new("moment").required(true))]
    Restore {
        name: String,
        /// The moment (RFC 3339, e.g. 2026-12-06T10:15:00Z): the last commit at or before it.
        #[arg(long, value_name = "TIME", group = "moment")]
        to: Option<String>,
        /// Undo its last restore in place: back to the state just before it.
        #[arg(long, group = "moment")]
        undo: bool,
        /// Restore without asking.
        #[arg(long, short)]
        yes: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Run psql connected to the database.
    Connect {
        name: String,
        /// Extra arguments for psql (after --).
        #[arg(last = true)]
        psql_args: Vec<String>,
    },
}

/// How long the CLI waits for a restore or a clone before giving up (the work goes on).
const WAIT_LIMIT: Duration = Duration::from_secs(60 * 60);
const POLL: Duration = Duration::from_millis(300);

/// Runs the CLI; returns the process exit code.
///
/// # Errors
/// Any failure, as a one-line message for the user.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let settings = Settings::load(cli.server.clone(), cli.token.clone());
    let json = cli.json;
    match cli.command {
        Command::Up { args } => Err(hand_over("up", &args)),
        Command::Dr { args } => Err(hand_over("dr", &args)),
        Command::Certs { domain, out } => certs(&domain, &out, json).map(|()| 0),
        Command::Config(cmd) => config(cmd, &settings, json).map(|()| 0),
        Command::Project(cmd) => project(cmd, &ApiClient::new(&settings)?, json).await.map(|()| 0),
        Command::Db(cmd) => db(cmd, &ApiClient::new(&settings)?, json).await,
        Command::Usage => {
            output::usage(&ApiClient::new(&settings)?.get::<Vec<Usage>>("/v1/usage").await?, json);
            Ok(0)
        }
        Command::Report { from, to, owner, csv } => {
            let api = ApiClient::new(&settings)?;
            let mut query: Vec<(&str, String)> =
                [("from", from), ("to", to), ("owner", owner)].into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            if csv {
                query.push(("format", "csv".into()));
                print!("{}", api.get_text("/v1/reports/usage", &query).await?);
            } else {
                output::report(&api.get_query::<UsageReport>("/v1/reports/usage", &query).await?, json);
            }
            Ok(0)
        }
        // Help stops nothing: this command's, then the controller's (its flags).
        Command::Down { args } if asks_for_help(&args) => {
            use clap::CommandFactory as _;
            if let Some(down) = Cli::command().find_subcommand_mut("down") {
                print!("{}\n\n", down.render_long_help());
            }
            std::io::Write::flush(&mut std::io::stdout())?;
            Err(hand_over("down", &args))
        }
        Command::Down { args } => {
            let api = ApiClient::new(&settings)?;
            match down(&api, json).await {
                Err(e) if api.is_local() && matches!(e.downcast_ref(), Some(ClientError::Unreachable { .. })) => {
                    Err(hand_over("down", &args))
                }
                other => other.map(|()| 0),
            }
        }
    }
}

/// Stops every running database the caller may see, and waits until they are.
async fn down(api: &ApiClient, json: bool) -> anyhow::Result<()> {
    let databases: Vec<Database> = api.get("/v1/databases").await?;
    let running: Vec<&Database> = databases
        .iter()
        .filter(|d| matches!(d.status, DatabaseStatus::Running | DatabaseStatus::Starting | DatabaseStatus::Creating))
        .collect();
    for d in &running {
        let _: Database = api.post(&format!("/v1/databases/{}/stop", d.name), &()).await?;
    }
    for d in &running {
        wait_for_database(api, d, Settle::Stopped).await?;
    }
    output::done(&format!("stopped {} database(s); a connection wakes each", running.len()), json);
    Ok(())
}

/// Whether the flags handed over to the controller ask for help (`-h`, `--help`).
fn asks_for_help(args: &[std::ffi::OsString]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// Replaces this process with `devdb-controller COMMAND ARGS` (beside this executable, else on
/// the PATH): signals and the exit status are then the controller's own.
fn hand_over(command: &str, args: &[std::ffi::OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.join("devdb-controller")));
    let program = beside.filter(|p| p.is_file()).unwrap_or_else(|| "devdb-controller".into());
    let error = controller_command(&program, command, args).exec();
    anyhow::anyhow!(
        "cannot run {} ({error}): install it beside devdb (cargo install --path controller)",
        program.display()
    )
}

/// `program COMMAND ARGS`: the controller `devdb up`/`devdb down` hand over to.
fn controller_command(program: &std::path::Path, command: &str, args: &[std::ffi::OsString]) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    // The user's API token is the CLI's: the controller (and what it starts) has no use for it.
    cmd.arg(command).args(args).env_remove("DEVDB_TOKEN");
    cmd
}

fn certs(domain: &devdb_shared::Domain, out: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let paths = devdb_certs::DevCertificates::generate(domain.as_str())?.write_to(out)?;
    if json {
        output::done(&format!("wrote {}", out.display()), json);
        return Ok(());
    }
    println!(
        "Wrote a development CA and a certificate for *.{domain} in {dir}:\n  \
         {ca}  (clients: sslrootcert=, with sslmode=verify-full)\n  \
         {cert} and {key}  (devdb-proxy --tls-cert/--tls-key)\n\n\
         In Kubernetes: kubectl create secret tls devdb-proxy-tls --cert {cert} --key {key}",
        dir = out.display(),
        ca = paths.ca_cert.display(),
        cert = paths.server_cert.display(),
        key = paths.server_key.display(),
    );
    Ok(())
}

fn config(cmd: ConfigCommand, settings: &Settings, json: bool) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::SetServer { url } => {
            let path = Settings::save(|s| s.server = Some(url.trim_end_matches('/').to_string()))?;
            println!("saved server {url} in {}", path.display());
        }
        ConfigCommand::SetToken { token } => {
            let path = Settings::save(|s| s.token = Some(token))?;
            println!("saved token in {}", path.display());
        }
        ConfigCommand::Show => output::settings(settings, json),
    }
    Ok(())
}

async fn project(cmd: ProjectCommand, api: &ApiClient, json: bool) -> anyhow::Result<()> {
    match cmd {
        ProjectCommand::Create {
            name,
            from,
            db_version,
            db_type: _,
            owner,
            username,
            database,
            idle_stop_after,
            default_ttl,
            backup,
            no_wait,
        } => {
            let ProjectBackup { backup, no_backup, backup_schedule, backup_retention } = *backup;
            let backup = backup_request(backup, no_backup, backup_schedule, backup_retention);
            let default_credentials =
                username.zip(database).map(|(username, database)| CredentialsRequest { username, database });
            let request = CreateProject {
                name,
                owner,
                db_type: DbType::Postgres,
                db_version,
                backup_location: from,
                default_credentials,
                idle_stop_after,
                default_ttl,
                backup,
            };
            let project: Project = api.post("/v1/projects", &request).await?;
            let project = if no_wait { project } else { wait_for_project(api, &project).await? };
            output::project(&project, json);
            if project.status == ProjectStatus::Failed {
                anyhow::bail!("restore of {} failed: {}", project.name, project.error.unwrap_or_default());
            }
        }
        ProjectCommand::List { owner } => {
            let path = owner.map_or("/v1/projects".into(), |o| format!("/v1/projects?owner={o}"));
            output::projects(&api.get::<Vec<Project>>(&path).await?, json);
        }
        ProjectCommand::Show { name } => output::project(&api.get(&format!("/v1/projects/{name}")).await?, json),
        ProjectCommand::Delete { name } => {
            api.delete_empty(&format!("/v1/projects/{name}")).await?;
            output::done(&format!("deleted project {name}"), json);
        }
        ProjectCommand::Scan { name, rules } => {
            let report: ScanReport = api.post(&format!("/v1/projects/{name}/scan"), &()).await?;
            if rules {
                let suggested: Vec<&MaskRule> =
                    report.findings.iter().filter(|f| !f.covered).map(|f| &f.suggested).collect();
                output::print_json(&suggested);
            } else {
                output::scan(&report, json);
            }
        }
        ProjectCommand::Masking { name, rotate_key: true, no_wait, .. } => {
            let before: Project = api.get(&format!("/v1/projects/{name}")).await?;
            let project: Project = api.post(&format!("/v1/projects/{name}/masking/rotate-key"), &()).await?;
            let project = if no_wait { project } else { wait_for_project(api, &before).await? };
            output::project(&project, json);
            if let Some(error) = project.error {
                anyhow::bail!("the restore of {name} under its new key failed: {error}");
            }
        }
        ProjectCommand::Masking { name, file: None, .. } => {
            let masking: serde_json::Value = api.get(&format!("/v1/projects/{name}/masking")).await?;
            output::print_json(&masking);
        }
        ProjectCommand::Masking { name, file: Some(file), no_wait, .. } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            let body = if value.is_array() { serde_json::json!({ "rules": value }) } else { value };
            let before: Project = api.get(&format!("/v1/projects/{name}")).await?;
            let project: Project = api.put(&format!("/v1/projects/{name}/masking"), &body).await?;
            let restoring = project.snapshot == before.snapshot && project.masking.rules != before.masking.rules;
            let project = if no_wait || !restoring { project } else { wait_for_project(api, &before).await? };
            output::project(&project, json);
            if let Some(error) = project.error {
                anyhow::bail!("the masked restore of {name} failed: {error}");
            }
        }
        ProjectCommand::Rollback { name, to } => {
            let request = devdb_shared::api::Rollback { generation: to };
            let project: Project = api.post(&format!("/v1/projects/{name}/rollback"), &request).await?;
            output::project(&project, json);
        }
        ProjectCommand::Refresh { name, no_wait } => {
            let project: Project = api.post(&format!("/v1/projects/{name}/refresh"), &()).await?;
            let project = if no_wait { project } else { wait_for_project(api, &project).await? };
            output::project(&project, json);
            if let Some(error) = project.error {
                anyhow::bail!("refresh of {name} failed: {error}");
            }
        }
    }
    Ok(())
}

/// `--backup`, `--no-backup`, `--backup-schedule` and `--backup-retention` as a request (none
/// given: none); a schedule or a retention asks for backups.
fn backup_request(
    on: bool,
    off: bool,
    schedule: Option<String>,
    retention: Option<String>,
) -> Option<devdb_shared::api::BackupRequest> {
    let enabled = on || schedule.is_some() || retention.is_some();
    (enabled || off).then_some(devdb_shared::api::BackupRequest { enabled, schedule, retention })
}

async fn db(cmd: DbCommand, api: &ApiClient, json: bool) -> anyhow::Result<i32> {
    match cmd {
        DbCommand::Create {
            name,
            project,
            owner,
            ttl,
            protected,
            idle_stop_after,
            backup,
            no_backup,
            backup_schedule,
            backup_retention,
            from_database,
            at,
            no_wait,
        } => {
            let backup = backup_request(backup, no_backup, backup_schedule, backup_retention);
            let project = match (project, &from_database) {
                (Some(project), _) => project,
                (None, Some(from)) => api.get::<Database>(&format!("/v1/databases/{from}")).await?.project,
                (None, None) => anyhow::bail!("give --project (or --from-database)"),
            };
            let request =
                CreateDatabase { name, project, owner, ttl, protected, idle_stop_after, backup, from_database, at };
            let database: Database = api.post("/v1/databases", &request).await?;
            let database = if no_wait { database } else { wait_for_database(api, &database, Settle::Running).await? };
            output::database(&database, json);
        }
        DbCommand::Stop { name, no_wait } => {
            let database: Database = api.post(&format!("/v1/databases/{name}/stop"), &()).await?;
            let database = if no_wait { database } else { wait_for_database(api, &database, Settle::Stopped).await? };
            output::database(&database, json);
        }
        DbCommand::Start { name, no_wait } => {
            let database: Database = api.post(&format!("/v1/databases/{name}/start"), &()).await?;
            let database = if no_wait { database } else { wait_for_database(api, &database, Settle::Running).await? };
            output::database(&database, json);
        }
        DbCommand::Extend { name, ttl } => {
            let body = devdb_shared::api::ExtendDatabase { ttl };
            output::database(&api.post(&format!("/v1/databases/{name}/extend"), &body).await?, json);
        }
        DbCommand::Set { name, settings } => {
            let mut changes = std::collections::BTreeMap::new();
            for pair in settings {
                let Some((key, value)) = pair.split_once('=') else {
                    anyhow::bail!("{pair:?} is not key=value (key= puts a parameter back to its default)");
                };
                changes.insert(key.trim().to_string(), Some(value.trim().to_string()).filter(|v| !v.is_empty()));
            }
            let body = devdb_shared::api::PatchDatabase { settings: Some(changes), ..Default::default() };
            output::database(&api.patch(&format!("/v1/databases/{name}"), &body).await?, json);
        }
        DbCommand::Backup { name, on, off: _, schedule, retention } => {
            let backup = devdb_shared::api::BackupRequest { enabled: on, schedule, retention };
            let body = devdb_shared::api::PatchDatabase { backup: Some(backup), ..Default::default() };
            output::database(&api.patch(&format!("/v1/databases/{name}"), &body).await?, json);
        }
        DbCommand::Protect { name, off } => {
            let body = devdb_shared::api::PatchDatabase { protected: Some(!off), ..Default::default() };
            output::database(&api.patch(&format!("/v1/databases/{name}"), &body).await?, json);
        }
        DbCommand::List { project, owner } => {
            let query: Vec<String> = [("project", project), ("owner", owner)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                .collect();
            let path =
                if query.is_empty() { "/v1/databases".into() } else { format!("/v1/databases?{}", query.join("&")) };
            output::databases(&api.get::<Vec<Database>>(&path).await?, json);
        }
        DbCommand::Show { name } => output::database(&api.get(&format!("/v1/databases/{name}")).await?, json),
        DbCommand::Delete { name, no_wait } => {
            let _: Database = api.delete(&format!("/v1/databases/{name}")).await?;
            if !no_wait {
                let spinner = output::spinner(&format!("deleting {name}"));
                let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
                while api.get::<Database>(&format!("/v1/databases/{name}")).await.is_ok() {
                    anyhow::ensure!(tokio::time::Instant::now() < deadline, "{name} is still being deleted");
                    tokio::time::sleep(POLL).await;
                }
                spinner.finish_and_clear();
            }
            output::done(&format!("deleted database {name}"), json);
        }
        DbCommand::Reset { name, no_wait } => {
            let database: Database = api.post(&format!("/v1/databases/{name}/reset"), &()).await?;
            let database = if no_wait { database } else { wait_for_database(api, &database, Settle::Running).await? };
            output::database(&database, json);
        }
        DbCommand::Restore { name, to, undo, yes, no_wait } => {
            let moment = to.as_deref().map_or("the state before its last restore", |to| to);
            if !yes {
                confirm(&format!(
                    "Restore database {name} to {moment}? Everything written since is replaced; \
                     the state it has now is kept (`devdb db restore {name} --undo`)."
                ))?;
            }
            let body = devdb_shared::api::RestoreDatabase { to, undo };
            let database: Database = api.post(&format!("/v1/databases/{name}/restore"), &body).await?;
            let database = if no_wait { database } else { wait_for_database(api, &database, Settle::Running).await? };
            if let Some(error) = database.error.as_deref().filter(|_| !no_wait) {
                anyhow::bail!("database {name}: {error}");
            }
            output::database(&database, json);
        }
        DbCommand::Connect { name, psql_args } => {
            let database: Database = api.get(&format!("/v1/databases/{name}")).await?;
            return connect(&database, &psql_args, api.is_local());
        }
    }
    Ok(0)
}

/// Asks `question` on the terminal and goes on only on a yes; without a terminal, asks for
/// `--yes` instead of guessing.
fn confirm(question: &str) -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    anyhow::ensure!(std::io::stdin().is_terminal(), "{question} Confirm with --yes (no terminal to ask on)");
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    anyhow::ensure!(matches!(answer.trim(), "y" | "Y" | "yes"), "not confirmed: nothing changed");
    Ok(())
}

/// Polls a project until its restore is over, with a progress bar of the bytes fetched.
async fn wait_for_project(api: &ApiClient, project: &Project) -> anyhow::Result<Project> {
    let bar = output::progress(&format!("restoring {}", project.name));
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let current: Project = api.get(&format!("/v1/projects/{}", project.name)).await?;
        output::update_progress(&bar, &current);
        let settled = match current.status {
            ProjectStatus::Failed => true,
            ProjectStatus::Ready => current.progress.is_none() && current.snapshot.is_some(),
            ProjectStatus::Pending | ProjectStatus::Restoring => false,
        };
        // A refresh keeps status ready; it is over when the snapshot changes or an error shows.
        let refreshed = current.snapshot != project.snapshot || current.error.is_some() || project.snapshot.is_none();
        if settled && refreshed {
            bar.finish_and_clear();
            return Ok(current);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} is still restoring; check `devdb project show`",
            project.name
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Where a database is expected to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Running,
    Stopped,
}

/// Polls a database until it settles as expected (or fails).
async fn wait_for_database(api: &ApiClient, database: &Database, settle: Settle) -> anyhow::Result<Database> {
    let doing = match (settle, database.status) {
        (Settle::Stopped, _) => format!("stopping {}", database.name),
        (Settle::Running, DatabaseStatus::Stopped | DatabaseStatus::Starting) => format!("starting {}", database.name),
        (Settle::Running, _) => format!("creating {} from project {}", database.name, database.project),
    };
    let spinner = output::spinner(&doing);
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let current: Database = api.get(&format!("/v1/databases/{}", database.name)).await?;
        let done = match (settle, current.status) {
            (Settle::Running, DatabaseStatus::Running) | (Settle::Stopped, DatabaseStatus::Stopped) => true,
            (_, DatabaseStatus::Error | DatabaseStatus::Deleting) => {
                spinner.finish_and_clear();
                anyhow::bail!("{} is {:?}: {}", current.name, current.status, current.error.unwrap_or_default());
            }
            _ => false,
        };
        if done {
            spinner.finish_and_clear();
            return Ok(current);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{}: still not done; check `devdb db show`", doing);
        tokio::time::sleep(POLL).await;
    }
}

/// A libpq connection string for `database`. With a local proxy (names under `.localhost`, which
/// may not resolve, or an API server on loopback) it adds `hostaddr=127.0.0.1`: libpq still sends
/// the host name as SNI.
pub fn conninfo(database: &Database, ca: Option<&std::path::Path>, local: bool) -> String {
    let mut parts = vec![
        format!("host={}", database.host),
        format!("port={}", database.port),
        format!("user={}", database.username),
        format!("dbname={}", database.database),
    ];
    if local || database.host.ends_with(".localhost") {
        parts.push("hostaddr=127.0.0.1".into());
    }
    match ca {
        Some(ca) => parts.push(format!("sslmode=verify-full sslrootcert={}", ca.display())),
        None => parts.push("sslmode=require".into()),
    }
    parts.join(" ")
}

fn connect(database: &Database, extra: &[String], local: bool) -> anyhow::Result<i32> {
    let status = psql_command(database, extra, local_ca().as_deref(), local).status().map_err(|e| {
        anyhow::anyhow!("cannot run psql ({e}); install the PostgreSQL client (apt-get install postgresql-client)")
    })?;
    Ok(status.code().unwrap_or(1))
}

/// DevDB's secrets that may sit in the environment of whoever runs the CLI: its own API token,
/// and a controller's or proxy's tokens and key (a shell that also runs them). No program the CLI
/// starts needs any of them but the controller, which gets its own.
const SECRET_VARIABLES: [&str; 5] = [
    "DEVDB_TOKEN",
    "DEVDB_CONTROLLER_ADMIN_TOKEN",
    "DEVDB_CONTROLLER_SECRET_KEY",
    "DEVDB_PROXY_ROUTES_TOKEN",
    "DEVDB_PROXY_ADMIN_TOKEN",
];

/// psql connected to `database`: the password in its environment (never in its arguments, which
/// every local user can read in `ps`), and none of DevDB's other secrets there (psql hands its
/// environment to `\!` shells, pagers and editors).
fn psql_command(
    database: &Database,
    extra: &[String],
    ca: Option<&std::path::Path>,
    local: bool,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(conninfo(database, ca, local)).args(extra).env("PGPASSWORD", &database.password);
    for secret in SECRET_VARIABLES {
        cmd.env_remove(secret);
    }
    cmd
}

/// The development CA of a local `devdb up`, when there is one in the usual place.
fn local_ca() -> Option<PathBuf> {
    let ca = std::env::var_os("DEVDB_CA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".devdb/certs/ca.crt"));
    ca.is_file().then_some(ca)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    fn database() -> Database {
        serde_json::from_value(serde_json::json!({
            "name": "kate-pg", "project": "shop", "owner": "kate", "status": "running",
            "host": "kate-pg.db.devdb.localhost", "port": 6432, "username": "app",
            "password": "the-db-password-0123", "database": "shop",
            "uri": "postgresql://app:the-db-password-0123@kate-pg.db.devdb.localhost:6432/shop?sslmode=require",
            "createdAt": "2026-12-01T09:00:00Z"
        }))
        .expect("a database")
    }

    /// Whether `cmd` passes `var` on from the environment it inherits (it does not remove it).
    fn inherits(cmd: &std::process::Command, var: &str) -> bool {
        !cmd.get_envs().any(|(k, v)| k == OsStr::new(var) && v.is_none())
    }

    #[test]
    fn psql_gets_the_database_password_only_in_its_environment_and_no_api_token() {
        let cmd = psql_command(&database(), &["-c".into(), "SELECT 1".into()], None, true);
        let argv: Vec<&OsStr> = cmd.get_args().collect();
        assert!(argv.iter().all(|a| !a.to_string_lossy().contains("the-db-password")), "{argv:?}");
        let password = cmd.get_envs().find(|(k, _)| *k == OsStr::new("PGPASSWORD")).and_then(|(_, v)| v);
        assert_eq!(password, Some(OsStr::new("the-db-password-0123")));
        for secret in SECRET_VARIABLES {
            assert!(!inherits(&cmd, secret), "psql would inherit {secret}");
        }
    }

    #[test]
    fn the_controller_devdb_up_runs_does_not_inherit_the_clis_token() {
        let cmd =
            controller_command(std::path::Path::new("devdb-controller"), "up", &["--data-dir".into(), "d".into()]);
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["up", "--data-dir", "d"]);
        assert!(!inherits(&cmd, "DEVDB_TOKEN"), "the CLI's API token is the user's, not the controller's");
        assert!(inherits(&cmd, "DEVDB_CONTROLLER_ADMIN_TOKEN"), "the controller's own settings reach it");
    }
}
