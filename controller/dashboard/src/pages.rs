//! The dashboard's pages as HTML (maud: every value is escaped). Each page is a function of
//! what the API answered; the handlers in the crate's root fetch it.

use devdb_shared::api::{Database, DatabaseStatus, Project, ProjectStatus};
use maud::{DOCTYPE, Markup, html};

use crate::charts;
use crate::session::Session;
use devdb_shared::metrics::{Point, Range};
use devdb_shared::reports::UsageReport;

/// Every page: its title, the navigation, `body`. `refresh`: reload every few seconds (while
/// something is in progress).
pub fn layout(session: &Session, title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh { meta http-equiv="refresh" content="3"; }
                title { (title) " · DevDB" }
                link rel="stylesheet" href="/ui/assets/dashboard.css";
                script src="/ui/assets/dashboard.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/databases" { "DevDB" }
                    nav aria-label="Main" {
                        a href="/ui/databases" { "Databases" }
                        a href="/ui/projects" { "Projects" }
                        a href="/ui/reports/usage" { "Usage" }
                    }
                    @if session.signed_in {
                        form.signout method="post" action="/ui/sign-out" {
                            (csrf(session))
                            span.who { (session.owner().unwrap_or("admin")) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden CSRF field of every form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub fn sign_in(session: &Session, next: &str, error: Option<&str>) -> Markup {
    layout(
        session,
        "Sign in",
        false,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form.card method="post" action="/ui/sign-in" {
                (csrf(session))
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p.hint { "The token your DevDB operator gave you (the one the CLI uses as DEVDB_TOKEN)." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A status as a badge.
fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge {status}")) { (status) } }
}

fn status_text<T: serde::Serialize>(status: &T) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Whether a database is on its way somewhere (the page refreshes itself).
pub fn in_progress(status: DatabaseStatus) -> bool {
    matches!(
        status,
        DatabaseStatus::Creating | DatabaseStatus::Recovering | DatabaseStatus::Starting | DatabaseStatus::Deleting
    )
}

/// The filters of the databases page.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filters {
    pub project: Option<String>,
    pub owner: Option<String>,
    pub status: Option<String>,
}

const STATUSES: [&str; 7] = ["creating", "running", "recovering", "stopped", "starting", "error", "deleting"];

pub fn databases(
    session: &Session,
    databases: &[Database],
    projects: &[Project],
    filters: &Filters,
    error: Option<&str>,
) -> Markup {
    let shown: Vec<&Database> = databases
        .iter()
        .filter(|d| filters.status.as_deref().is_none_or(|s| s.is_empty() || status_text(&d.status) == s))
        .collect();
    let refresh = error.is_none() && shown.iter().any(|d| in_progress(d.status));
    let ready: Vec<&Project> = projects.iter().filter(|p| p.status == ProjectStatus::Ready).collect();
    let chosen = |value: &Option<String>, option: &str| value.as_deref() == Some(option);
    layout(
        session,
        "Databases",
        refresh,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            section aria-labelledby="create-title" .card #create {
                h2 #create-title { "New database" }
                @if ready.is_empty() {
                    p { "No project is ready to clone yet. " a href="/ui/projects" { "See projects" } "." }
                } @else {
                    form.inline method="post" action="/ui/databases" {
                        (csrf(session))
                        label { "Name" input name="name" required pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?" maxlength="40" placeholder="e.g. my-feature-db"; }
                        label { "Project"
                            select name="project" required {
                                @for p in &ready { option value=(p.name) selected[chosen(&filters.project, p.name.as_str())] { (p.name) } }
                            }
                        }
                        label { "Lifetime" input name="ttl" placeholder="e.g. 7d (optional)"; }
                        button type="submit" { "Create" }
                    }
                }
            }
            form.filters method="get" action="/ui/databases" aria-label="Filter databases" {
                label { "Project"
                    select name="project" {
                        option value="" { "all" }
                        @for p in projects { option value=(p.name) selected[chosen(&filters.project, p.name.as_str())] { (p.name) } }
                    }
                }
                @if session.owner().is_none() {
                    label { "Owner" input name="owner" value=(filters.owner.clone().unwrap_or_default()); }
                }
                label { "Status"
                    select name="status" {
                        option value="" { "all" }
                        @for s in STATUSES { option value=(s) selected[chosen(&filters.status, s)] { (s) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if shown.is_empty() {
                p.empty { "No databases" @if filters.project.is_some() || filters.status.is_some() || filters.owner.is_some() { " match these filters" } "." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Name" } th { "Project" } th { "Owner" } th { "Status" } th { "Created" } th { "Last active" } th { "Expires" } } }
                        tbody {
                            @for d in &shown {
                                tr {
                                    td { a href=(format!("/ui/databases/{}", d.name)) { (d.name) } }
                                    td { (d.project) }
                                    td { (d.owner) }
                                    td { (badge(&status_text(&d.status))) }
                                    td { (d.created_at) }
                                    td { (d.last_active_at.as_deref().unwrap_or("–")) }
                                    td { (d.expires_at.as_deref().unwrap_or("never")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A value shown, copied whole by its button (`shown` may hide the password).
fn copyable(label: &str, shown: &str, full: &str) -> Markup {
    html! {
        div.copyable {
            span.label { (label) }
            code { (shown) }
            button type="button" data-copy=(full) aria-label=(format!("Copy {label}")) { "Copy" }
        }
    }
}

/// What a database page offers to copy: (label, text with the password, text without).
pub fn connection_strings(d: &Database) -> Vec<(&'static str, String, String)> {
    let uri = |password: &str| {
        format!("postgresql://{}:{password}@{}:{}/{}?sslmode=require", d.username, d.host, d.port, d.database)
    };
    let jdbc = |password: &str| {
        format!(
            "jdbc:postgresql://{}:{}/{}?sslmode=require&user={}&password={password}",
            d.host, d.port, d.database, d.username
        )
    };
    let env = |password: &str| {
        format!(
            "PGHOST={} PGPORT={} PGDATABASE={} PGUSER={} PGPASSWORD={password} PGSSLMODE=require",
            d.host, d.port, d.database, d.username
        )
    };
    let hidden = "••••••••";
    vec![
        ("psql", format!("psql \"{}\"", uri(&d.password)), format!("psql \"{}\"", uri(hidden))),
        ("URI", uri(&d.password), uri(hidden)),
        ("JDBC", jdbc(&d.password), jdbc(hidden)),
        ("Environment", env(&d.password), env(hidden)),
    ]
}

/// A database's page.
pub fn database(
    session: &Session,
    d: &Database,
    history: &[Point],
    range: Range,
    now: i64,
    error: Option<&str>,
) -> Markup {
    let status = status_text(&d.status);
    let actions: Vec<(&str, &str)> = match d.status {
        DatabaseStatus::Running => vec![("stop", "Stop"), ("reset", "Reset"), ("delete", "Delete")],
        DatabaseStatus::Stopped => vec![("start", "Start"), ("reset", "Reset"), ("delete", "Delete")],
        DatabaseStatus::Deleting => vec![],
        _ => vec![("reset", "Reset"), ("delete", "Delete")],
    };
    layout(
        session,
        d.name.as_str(),
        error.is_none() && in_progress(d.status),
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            p.summary { (badge(&status)) " clone of " a href="/ui/projects" { (d.project) } ", owned by " (d.owner) }
            @if let Some(e) = &d.error { p.error { (e) } }
            @if !actions.is_empty() {
                nav.actions aria-label="Actions" {
                    @for (action, label) in &actions {
                        a.button.(action) href=(format!("/ui/databases/{}/confirm?action={action}", d.name)) { (label) }
                    }
                }
            }
            section.card aria-labelledby="connect-title" {
                h2 #connect-title { "Connect" }
                @for (label, full, shown) in connection_strings(d) { (copyable(label, &shown, &full)) }
                details.password {
                    summary { "Show password" }
                    code #password { (d.password) }
                }
            }
            section.card aria-labelledby="activity-title" {
                h2 #activity-title { "Activity" }
                dl.facts {
                    dt { "Created" } dd { (d.created_at) }
                    dt { "Last active" } dd { (d.last_active_at.as_deref().unwrap_or("no session yet")) }
                    @if let Some(at) = &d.stopped_at {
                        dt { "Stopped" } dd { (at) @if let Some(r) = &d.stop_reason { " (" (status_text(r)) ")" } }
                    }
                    dt { "Stops when idle for" } dd { (d.idle_stop_after.as_deref().unwrap_or("never")) }
                    dt { "Expires" } dd { (d.expires_at.as_deref().unwrap_or("never")) @if d.protected { " (protected)" } }
                }
            }
            @if let Some(backup) = &d.backup { (backups(session, d, backup, now)) }
            section.card aria-labelledby="settings-title" {
                h2 #settings-title { "PostgreSQL settings" }
                @if d.settings.is_empty() {
                    p { "Defaults for every parameter." }
                } @else {
                    table.settings {
                        thead { tr { th { "Parameter" } th { "Value" } } }
                        tbody { @for (k, v) in &d.settings { tr { td { code { (k) } } td { code { (v) } } } } }
                    }
                }
                form.inline method="post" action=(format!("/ui/databases/{}/settings", d.name)) {
                    (csrf(session))
                    label { "Parameter"
                        select name="parameter" {
                            @for p in devdb_core::settings::ALLOWED {
                                option value=(p.name) { (p.name) @if p.restart { " (restarts)" } }
                            }
                        }
                    }
                    label { "Value" input name="value" placeholder="empty: back to the default"; }
                    button type="submit" { "Set" }
                }
            }
            section aria-labelledby="charts-title" {
                h2 #charts-title { "Monitoring" }
                nav.ranges aria-label="Chart range" {
                    @for r in Range::ALL {
                        a href=(format!("/ui/databases/{}?range={}", d.name, r.as_str())) aria-current=[(r == range).then_some("page")] { "last " (r.as_str()) }
                    }
                }
                div.charts {
                    @for (title, unit, lines) in charts::all() {
                        (charts::chart(title, unit, &lines, history, range, now))
                    }
                }
            }
        },
    )
}

/// A database's backups: where they stand, and a restore to a moment picked in its window (UTC).
fn backups(session: &Session, d: &Database, b: &devdb_shared::api::BackupStatus, now: i64) -> Markup {
    // `datetime-local` takes `YYYY-MM-DDTHH:MM:SS`, no zone: the form says UTC.
    let local = |rfc3339: &str| rfc3339.trim_end_matches('Z').chars().take(19).collect::<String>();
    let now = local(&devdb_core::lifecycle::timestamp(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.unsigned_abs()),
    ));
    html! {
        section.card aria-labelledby="backups-title" {
            h2 #backups-title { "Backups" }
            @if let Some(warning) = &b.warning { p.error role="status" { (warning) } }
            dl.facts {
                dt { "Last backup" } dd { (b.last_backup_at.as_deref().unwrap_or("the first is under way")) }
                dt { "Schedule" } dd {
                    (b.schedule.as_deref().unwrap_or("daily"))
                    @match &b.retention {
                        Some(days) => { "; full backups kept " (days) }
                        None => { "; the two newest full backups kept" }
                    }
                }
                dt { "WAL archived" } dd {
                    (b.last_archived_at.as_deref().unwrap_or("not yet"))
                    @if let Some(lag) = b.archive_lag_seconds.filter(|lag| *lag > 0) { " (" (lag) " s waiting)" }
                }
                @if let Some(from) = &b.restorable_from {
                    dt { "Restorable" } dd { "from " (from) " to now" }
                }
                @if let Some(bytes) = b.repository_bytes {
                    dt { "In the repository" } dd { (devdb_shared::size::human(bytes)) }
                }
            }
            @if let Some(from) = &b.restorable_from {
                form.restore method="post" action=(format!("/ui/databases/{}/restore", d.name)) {
                    (csrf(session))
                    label { "Restore to (UTC)"
                        input type="datetime-local" name="to" step="1" required min=(local(from)) max=(now) value=(now);
                    }
                    label.confirm {
                        input type="checkbox" name="confirm" value="yes" required;
                        " Everything written after that moment is replaced (the state now is kept: an undo brings it back)"
                    }
                    button.danger type="submit" { "Restore" }
                }
            }
            @if let Some(before) = &b.before_restore {
                form.restore method="post" action=(format!("/ui/databases/{}/restore", d.name)) {
                    (csrf(session))
                    input type="hidden" name="undo" value="yes";
                    input type="hidden" name="confirm" value="yes";
                    p { "Restored in place; the state before, as of " (before) ", is kept." }
                    button type="submit" { "Undo the restore" }
                }
            }
        }
    }
}

/// The page asking to confirm `label` (what it does in `explain`), posting to `action`.
pub fn confirm(session: &Session, title: &str, explain: &str, action: &str, value: &str, back: &str) -> Markup {
    layout(
        session,
        title,
        false,
        html! {
            form.card method="post" action=(action) {
                (csrf(session))
                input type="hidden" name="action" value=(value);
                p { (explain) }
                div.buttons {
                    button.danger type="submit" autofocus { (title) }
                    a.button href=(back) { "Cancel" }
                }
            }
        },
    )
}

pub fn projects(session: &Session, projects: &[Project], error: Option<&str>) -> Markup {
    let refresh = error.is_none()
        && projects.iter().any(|p| matches!(p.status, ProjectStatus::Pending | ProjectStatus::Restoring));
    layout(
        session,
        "Projects",
        refresh,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            @if projects.is_empty() {
                p.empty { "No projects yet: create one with " code { "devdb project create" } "." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Name" } th { "Owner" } th { "Status" } th { "Source" } th { "Snapshot" } th { "Masking" } th { span.sr { "Actions" } } } }
                        tbody {
                            @for p in projects {
                                tr {
                                    td { (p.name) }
                                    td { (p.owner) }
                                    td {
                                        (badge(&status_text(&p.status)))
                                        @if let Some(progress) = &p.progress {
                                            @if matches!(p.status, ProjectStatus::Restoring) {
                                                br;
                                                @match progress.bytes_total {
                                                    Some(total) => {
                                                        progress value=(progress.bytes_done) max=(total) aria-label=(format!("Restore of {}", p.name)) {}
                                                        " " (devdb_shared::size::human(progress.bytes_done)) " of " (devdb_shared::size::human(total))
                                                    }
                                                    None => { (devdb_shared::size::human(progress.bytes_done)) " restored" }
                                                }
                                            }
                                        }
                                        @if let Some(e) = &p.error { p.error { (e) } }
                                    }
                                    td { code { (p.backup_location.as_deref().unwrap_or("(empty)")) } }
                                    td { @match &p.snapshot {
                                        Some(s) => { (devdb_shared::size::human(s.size_bytes)) ", " (s.created_at) }
                                        None => { "–" }
                                    } }
                                    td.masking {
                                        @match p.masking.rules.len() {
                                            0 => { "none" }
                                            1 => { "1 rule" }
                                            n => { (n) " rules" }
                                        }
                                        @if let Some(n) = p.snapshot.as_ref().and_then(|s| s.masking_verified) {
                                            br; span.hint { "verified: " (n) " originals absent" }
                                        }
                                        @if p.masking.require_rules { br; span.hint { "rules required" } }
                                    }
                                    td.row-actions {
                                        @if p.status == ProjectStatus::Ready {
                                            a href=(format!("/ui/databases?project={}#create", p.name)) { "New database" }
                                        }
                                        a href=(format!("/ui/projects/{}/masking", p.name)) { "Masking" }
                                        @if session.owner().is_none_or(|o| o == p.owner) {
                                            a href=(format!("/ui/projects/{}/confirm?action=refresh", p.name)) { "Refresh" }
                                            a href=(format!("/ui/projects/{}/confirm?action=delete", p.name)) { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The masking form: the rules as JSON text (kept as typed when refused), the two switches,
/// and which button was pressed (`save` or `suggest`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct MaskingForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub rules: String,
    /// Present (`on`) when checked.
    pub require_rules: Option<String>,
    pub verify: Option<String>,
    #[serde(default)]
    pub action: String,
}

impl MaskingForm {
    /// The rules typed: a JSON array of rules (empty text: none).
    ///
    /// # Errors
    /// Why the text is not a list of rules, for the page.
    pub fn rules(&self) -> Result<Vec<devdb_shared::api::MaskRule>, String> {
        if self.rules.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&self.rules).map_err(|e| format!("The rules are not a JSON list of rules: {e}"))
    }

    pub fn set_rules(&mut self, rules: Vec<devdb_shared::api::MaskRule>) {
        self.rules = serde_json::to_string_pretty(&rules).unwrap_or_default();
    }
}

impl From<&devdb_shared::api::Masking> for MaskingForm {
    fn from(masking: &devdb_shared::api::Masking) -> Self {
        let on = |b: bool| b.then(|| "on".to_string());
        let mut form = Self { require_rules: on(masking.require_rules), verify: on(masking.verify), ..Self::default() };
        if !masking.rules.is_empty() {
            form.set_rules(masking.rules.clone());
        }
        form
    }
}

/// A project's masking: what its snapshot's scan found, and its rules to edit.
pub fn masking(
    session: &Session,
    project: &Project,
    scan: Option<&devdb_shared::reports::ScanReport>,
    form: &MaskingForm,
    error: Option<&str>,
) -> Markup {
    let name = project.name.as_str();
    let path = |f: &devdb_shared::api::PiiFinding| {
        if f.json_path.is_empty() { f.column.clone() } else { format!("{} → {}", f.column, f.json_path.join(".")) }
    };
    layout(
        session,
        &format!("Masking of {name}"),
        // Never refreshed by itself: it holds a form being edited.
        false,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            section.card aria-labelledby="snapshot-title" {
                h2 #snapshot-title { "Snapshot" }
                dl.facts {
                    dt { "Status" } dd { (badge(&status_text(&project.status))) @if let Some(e) = &project.error { " " span.error { (e) } } }
                    dt { "Rules" } dd { (project.masking.rules.len()) }
                    dt { "Verified" } dd {
                        @match project.snapshot.as_ref().and_then(|s| s.masking_verified) {
                            Some(n) => { (n) " sampled originals looked for in its files, none found" }
                            None => { "no" }
                        }
                    }
                }
            }
            section.card aria-labelledby="scan-title" {
                h2 #scan-title { "Personal data found" }
                @match scan {
                    None => { p.empty { "No snapshot has been scanned yet: every restore scans the dump before masking it." } }
                    Some(scan) if scan.findings.is_empty() && scan.unlisted == 0 => { p.empty { "No column looks personal." } }
                    Some(scan) => {
                        p.hint { "What the last restore's scan found (values sampled before masking), and whether a rule masks it now." }
                        div.scroll { table {
                            thead { tr { th { "Table" } th { "Column" } th { "Kind" } th { "Evidence" } th { "Masked" } th { "Suggested" } } }
                            tbody {
                                @for f in &scan.findings {
                                    tr {
                                        td { code { (f.table) } }
                                        td { code { (path(f)) } }
                                        td { (f.kind) }
                                        td { (f.evidence) }
                                        td { @if f.covered { (badge("ready")) } @else { span.badge.error { "no" } } }
                                        td { code { (status_text(&f.suggested.strategy)) } }
                                    }
                                }
                            }
                        } }
                        @if scan.unlisted > 0 {
                            p.hint { "And " (scan.unlisted) " more columns the restore found but could not list." }
                        }
                    }
                }
            }
            section.card aria-labelledby="rules-title" {
                h2 #rules-title { "Rules" }
                form method="post" action=(format!("/ui/projects/{name}/masking")) {
                    (csrf(session))
                    label for="rules" { "Rules, as JSON: " code { r#"[{"table": "customers", "column": "email", "strategy": "email"}]"# } }
                    textarea #rules name="rules" rows="14" spellcheck="false" aria-describedby="strategies" { (form.rules) }
                    p #strategies .hint {
                        "Strategies: email, name, phone, address, hash, redact, dateShift (days), null, constant (value), keep. "
                        "Add jsonPath for a value inside a JSON column. Saving restores the project again, masked; "
                        "databases cloned before keep their data until reset."
                    }
                    label.check { input type="checkbox" name="require_rules" checked[form.require_rules.is_some()]; "Refuse new databases while a column found above has no rule" }
                    label.check { input type="checkbox" name="verify" checked[form.verify.is_some()]; "Verify: look for sampled originals in every file of the new snapshot" }
                    div.buttons {
                        button type="submit" name="action" value="save" { "Save and restore masked" }
                        button.secondary type="submit" name="action" value="suggest" { "Add suggested rules" }
                        a.button href="/ui/projects" { "Cancel" }
                    }
                }
            }
        },
    )
}

/// The report form's values.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
pub struct ReportFilters {
    pub from: Option<String>,
    pub to: Option<String>,
    pub owner: Option<String>,
}

pub fn usage(
    session: &Session,
    report: &UsageReport,
    filters: &ReportFilters,
    csv: &str,
    error: Option<&str>,
) -> Markup {
    layout(
        session,
        "Usage",
        false,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form.filters method="get" action="/ui/reports/usage" aria-label="Report period" {
                label { "From" input type="date" name="from" value=(report.from); }
                label { "To" input type="date" name="to" value=(report.to); }
                @if session.owner().is_none() {
                    label { "Owner" input name="owner" value=(filters.owner.clone().unwrap_or_default()) placeholder="all"; }
                }
                button type="submit" { "Show" }
                a.button href=(csv) download { "Download CSV" }
                button type="button" data-print { "Print" }
            }
            p.period { "From " (report.from) " to " (report.to) " (UTC days, inclusive)." }
            @if report.rows.is_empty() {
                p.empty { "No use recorded in this period." }
            }
            @for owner in report.owners() {
                section.owner aria-label=(format!("Usage of {owner}")) {
                    h2 { (owner) }
                    div.scroll {
                        table.report {
                            thead { tr { th { "Project" } th { "Created" } th { "Deleted" } th { "Running hours" } th { "Peak disk" } th { "Peak connections" } } }
                            tbody {
                                @for r in report.owner_rows(owner) {
                                    tr {
                                        td { (r.project) }
                                        td.n { (r.databases_created) }
                                        td.n { (r.databases_deleted) }
                                        td.n { (format!("{:.2}", r.running_hours)) }
                                        td.n { (devdb_shared::size::human(r.peak_disk_bytes)) }
                                        td.n { (r.peak_connections) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A page for a refusal the API gave (or a page that does not exist).
pub fn problem(session: &Session, title: &str, message: &str) -> Markup {
    layout(
        session,
        title,
        false,
        html! { p.error role="alert" { (message) } p { a href="/ui/databases" { "Back to databases" } } },
    )
}
