//! What the CLI prints: tables and key/value blocks for people, JSON for scripts, and
//! progress indicators on stderr (hidden when stderr is not a terminal).

use std::time::Duration;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use devdb_shared::api::{Database, Project};
use devdb_shared::reports::{ScanReport, Usage, UsageReport};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::Settings;

pub fn print_json(value: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY).set_content_arrangement(ContentArrangement::Dynamic).set_header(header.to_vec());
    t
}

fn kv(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:>width$}  {v}");
    }
}

fn status<T: Serialize>(s: &T) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

pub fn projects(projects: &[Project], json: bool) {
    if json {
        return print_json(&projects);
    }
    let mut t = table(&["NAME", "STATUS", "OWNER", "VERSION", "SNAPSHOT", "SOURCE"]);
    for p in projects {
        let snapshot =
            p.snapshot.as_ref().map_or("-".into(), |s| format!("{} ({})", s.created_at, HumanBytes(s.size_bytes)));
        t.add_row(vec![
            p.name.to_string(),
            status(&p.status),
            p.owner.clone(),
            p.db_version.clone(),
            snapshot,
            p.backup_location.clone().unwrap_or_else(|| "(empty)".into()),
        ]);
    }
    println!("{t}");
}

pub fn project(p: &Project, json: bool) {
    if json {
        return print_json(p);
    }
    let mut rows = vec![
        ("name", p.name.to_string()),
        ("status", status(&p.status)),
        ("owner", p.owner.clone()),
        ("postgres", p.db_version.clone()),
        ("source", p.backup_location.clone().unwrap_or_else(|| "(empty database)".into())),
        ("user", p.default_credentials.username.clone()),
        ("database", p.default_credentials.database.clone()),
    ];
    if let Some(s) = &p.snapshot {
        rows.push((
            "snapshot",
            format!("generation {}, {} ({})", s.generation, s.created_at, HumanBytes(s.size_bytes)),
        ));
    }
    let current = p.snapshot.as_ref().map(|s| s.generation);
    let kept: Vec<String> = p
        .snapshots
        .iter()
        .filter(|k| Some(k.generation) != current)
        .map(|k| format!("{} ({}, {})", k.generation, k.created_at, HumanBytes(k.size_bytes)))
        .collect();
    if !kept.is_empty() {
        // What `devdb project rollback --to` takes.
        rows.push(("kept", kept.join("; ")));
    }
    rows.push((
        "new databases",
        match &p.backup {
            Some(b) if b.enabled => {
                format!("backed up {}", backup_settings(b.schedule.as_deref(), b.retention.as_deref()))
            }
            Some(_) => "not backed up (unless created with --backup)".into(),
            None => "backed up when protected".into(),
        },
    ));
    if let Some(e) = &p.error {
        rows.push(("error", e.clone()));
    }
    kv(&rows);
}

pub fn databases(databases: &[Database], json: bool) {
    if json {
        return print_json(&databases);
    }
    let mut t = table(&["NAME", "STATUS", "PROJECT", "OWNER", "HOST", "LAST ACTIVE", "EXPIRES"]);
    for d in databases {
        let status = match (d.status, d.stop_reason) {
            (devdb_shared::api::DatabaseStatus::Stopped, Some(reason)) => {
                format!("{} ({})", status(&d.status), status(&reason))
            }
            _ => status(&d.status),
        };
        t.add_row(vec![
            d.name.to_string(),
            status,
            d.project.to_string(),
            d.owner.clone(),
            format!("{}:{}", d.host, d.port),
            d.last_active_at.clone().unwrap_or_else(|| "-".into()),
            if d.protected { "protected".into() } else { d.expires_at.clone().unwrap_or_else(|| "never".into()) },
        ]);
    }
    println!("{t}");
}

pub fn database(d: &Database, json: bool) {
    if json {
        return print_json(d);
    }
    let mut rows = vec![
        ("name", d.name.to_string()),
        ("status", status(&d.status)),
        ("project", d.project.to_string()),
        ("host", d.host.clone()),
        ("port", d.port.to_string()),
        ("user", d.username.clone()),
        ("password", d.password.clone()),
        ("database", d.database.clone()),
        ("uri", d.uri.clone()),
    ];
    if let Some(e) = &d.error {
        rows.push(("error", e.clone()));
    }
    if let Some(reason) = d.stop_reason {
        rows.push(("stopped", format!("{} ({})", d.stopped_at.clone().unwrap_or_default(), status(&reason))));
    }
    if let Some(at) = &d.last_active_at {
        rows.push(("last active", at.clone()));
    }
    for (key, value) in &d.settings {
        rows.push(("setting", format!("{key} = {value}")));
    }
    rows.push((
        "idle stop",
        d.idle_stop_after.as_ref().map_or("never".into(), |p| format!("after {p} without a session")),
    ));
    rows.push((
        "expires",
        if d.protected { "never (protected)".into() } else { d.expires_at.clone().unwrap_or_else(|| "never".into()) },
    ));
    rows.push(("backups", backups(d.backup.as_ref())));
    if let Some(b) = &d.backup {
        rows.push(("backed up", backup_settings(b.schedule.as_deref(), b.retention.as_deref())));
    }
    kv(&rows);
    if d.host.ends_with(".localhost") {
        println!("\nconnect: devdb db connect {}   (or psql \"{}\")", d.name, super::conninfo(d, None, true));
    } else {
        println!("\nconnect: devdb db connect {}   (or psql \"{}\")", d.name, d.uri);
    }
}

pub fn settings(s: &Settings, json: bool) {
    if json {
        return print_json(&serde_json::json!({ "server": s.server(), "token": s.token.as_ref().map(|_| "(set)") }));
    }
    let file = Settings::path().map_or("(none)".into(), |p| p.display().to_string());
    kv(&[
        ("server", s.server().to_string()),
        ("token", if s.token.is_some() { "(set)".into() } else { "(none)".into() }),
        ("config file", file),
    ]);
}

pub fn done(message: &str, json: bool) {
    if json {
        print_json(&serde_json::json!({ "message": message }));
    } else {
        println!("{message}");
    }
}

/// A spinner on stderr.
pub fn spinner(label: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// A bar for a restore: bytes when the total is known, a spinner until then.
pub fn progress(label: &str) -> ProgressBar {
    let bar = spinner(label);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes}/{total_bytes} {wide_bar} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

pub fn update_progress(bar: &ProgressBar, p: &Project) {
    if let Some(progress) = p.progress {
        if let Some(total) = progress.bytes_total {
            bar.set_length(total);
        }
        bar.set_position(progress.bytes_done);
    }
    bar.set_message(format!("{} {}", status(&p.status), p.name));
}

pub fn usage(usage: &[Usage], json: bool) {
    if json {
        return print_json(&usage);
    }
    let of = |used: u64, limit: Option<u64>, show: &dyn Fn(u64) -> String| {
        let used = show(used);
        limit.map_or(format!("{used} (no quota)"), |l| format!("{used} of {}", show(l)))
    };
    let count = |n: u64| n.to_string();
    let size = |n: u64| devdb_shared::size::human(n);
    let mut t = table(&["OWNER", "DATABASES", "RUNNING", "DISK"]);
    for u in usage {
        t.add_row(vec![
            u.owner.clone(),
            of(u.databases, u.quota.databases, &count),
            of(u.running, u.quota.running, &count),
            of(u.disk, u.quota.disk, &size),
        ]);
    }
    println!("{t}");
}

pub fn report(report: &UsageReport, json: bool) {
    if json {
        return print_json(report);
    }
    println!("From {} to {} (UTC days, inclusive)", report.from, report.to);
    let mut t = table(&["OWNER", "PROJECT", "CREATED", "DELETED", "RUNNING HOURS", "PEAK DISK", "PEAK CONNECTIONS"]);
    for r in &report.rows {
        t.add_row(vec![
            r.owner.clone(),
            r.project.clone(),
            r.databases_created.to_string(),
            r.databases_deleted.to_string(),
            format!("{:.2}", r.running_hours),
            devdb_shared::size::human(r.peak_disk_bytes),
            r.peak_connections.to_string(),
        ]);
    }
    println!("{t}");
}

pub fn scan(report: &ScanReport, json: bool) {
    if json {
        return print_json(report);
    }
    print!("{}", scan_text(report));
}

/// The scan as a table, and a line for the columns a restore found but could not list.
fn scan_text(report: &ScanReport) -> String {
    if report.findings.is_empty() && report.unlisted == 0 {
        return "No column looks personal.\n".into();
    }
    let mut t = table(&["TABLE", "COLUMN", "KIND", "EVIDENCE", "MASKED", "SUGGESTED RULE"]);
    for f in &report.findings {
        let column = if f.json_path.is_empty() {
            f.column.clone()
        } else {
            format!("{} -> {}", f.column, f.json_path.join("."))
        };
        // The strategy as the API writes it (`dateShift`).
        let strategy = serde_json::to_value(f.suggested.strategy).ok();
        t.add_row(vec![
            f.table.clone(),
            column,
            f.kind.clone(),
            f.evidence.clone(),
            if f.covered { "yes".into() } else { "NO".into() },
            strategy.as_ref().and_then(serde_json::Value::as_str).unwrap_or_default().to_string(),
        ]);
    }
    let mut text = format!("{t}\n");
    let unlisted = report.unlisted;
    if unlisted > 0 {
        text.push_str(&format!(
            "and {unlisted} more columns the restore found but could not list (those without a rule come first)\n"
        ));
    }
    text
}

/// How often backups are taken and what is kept: "daily, full backups kept 7d".
fn backup_settings(schedule: Option<&str>, retention: Option<&str>) -> String {
    let kept = retention.map_or("the two newest full backups kept".into(), |r| format!("full backups kept {r}"));
    format!("{}, {kept}", schedule.unwrap_or("daily"))
}

/// A database's backups in a line: off, waiting for the first, or the window it restores to.
fn backups(backup: Option<&devdb_shared::api::BackupStatus>) -> String {
    let Some(b) = backup else { return "off".into() };
    // Its WAL until now is archived before a restore reads it.
    let mut line = match &b.restorable_from {
        Some(from) => format!("restorable from {from} to now"),
        None => "on, the first backup is under way".into(),
    };
    if let Some(archived) = &b.last_archived_at {
        line.push_str(&format!("; WAL archived at {archived}"));
        if let Some(lag) = b.archive_lag_seconds.filter(|lag| *lag > 0) {
            line.push_str(&format!(" ({lag}s waiting)"));
        }
    }
    if let Some(before) = &b.before_restore {
        line.push_str(&format!("; restored in place, the state before kept (--undo: {before})"));
    }
    match &b.warning {
        Some(warning) => format!("{line}; warning: {warning}"),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan as the API answers it.
    fn scan_report(json: serde_json::Value) -> ScanReport {
        serde_json::from_value(json).expect("a scan report")
    }

    #[test]
    fn a_scan_shows_each_column_and_counts_those_a_restore_could_not_list() {
        assert_eq!(scan_text(&scan_report(serde_json::json!({ "findings": [] }))), "No column looks personal.\n");
        let report = serde_json::json!({
            "findings": [{
                "table": "public.orders", "column": "details", "jsonPath": ["contact", "email"], "kind": "email",
                "evidence": "20 of 20 sampled values", "covered": false,
                "suggested": { "table": "public.orders", "column": "details", "strategy": "email" },
            }],
            "unlisted": 51,
        });
        let text = scan_text(&scan_report(report));
        assert!(text.contains("details -> contact.email") && text.contains("NO"), "{text}");
        assert!(
            text.ends_with(
                "and 51 more columns the restore found but could not list (those without a rule come first)\n"
            ),
            "{text}"
        );
        let only_unlisted = scan_text(&scan_report(serde_json::json!({ "findings": [], "unlisted": 3 })));
        assert!(only_unlisted.contains("and 3 more columns"), "{only_unlisted}");
    }
}
