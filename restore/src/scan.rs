//! The personal-data scan, run on the restored data before masking: a sample of every text and
//! JSON column of the dump's tables, read as the project's user, judged here by what the values
//! look like (e-mail addresses, phone numbers, IP addresses, card numbers that pass the Luhn
//! check, national ids) and by what the columns are called (names, addresses).
//!
//! What it reads is bounded whatever the dump holds: [`SAMPLE`] values per column, each cut to
//! [`VALUE_BYTES`] by the server (a longer value is judged as the long text it is), JSON
//! documents of at most [`DOCUMENT_BYTES`] (larger ones are not sampled), at most [`PATHS`]
//! paths per JSON column; one column at a time.

use devdb_pgctl::session::{Session, SessionError};
use devdb_shared::api::{MaskRule, MaskStrategy, PiiFinding};

use devdb_pgctl::sql::ident;

/// Values sampled per column.
pub const SAMPLE: usize = 200;
/// Characters of a text value read (one more tells a longer value).
pub const VALUE_BYTES: usize = 256;
/// The largest JSON document sampled.
pub const DOCUMENT_BYTES: usize = 64 << 10;
/// JSON paths judged per column at most.
pub const PATHS: usize = 256;
/// The share of sampled values that must look alike for a column to be reported.
const SHARE: f64 = 0.5;

/// The text-like and JSON columns of the database's own tables: (schema, table, column, json).
const COLUMNS: &str = "\
SELECT n.nspname, c.relname, a.attname, t.typname IN ('json', 'jsonb')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND (t.typcategory = 'S' OR t.typname IN ('json', 'jsonb', 'inet', 'cidr'))
ORDER BY n.nspname, c.relname, a.attnum";

/// Scans the database of `session` (the project's user; its `search_path` is pinned here).
///
/// # Errors
/// When the server refuses a query.
pub fn scan(session: &mut Session) -> Result<Vec<PiiFinding>, SessionError> {
    session.execute("SET search_path = pg_catalog, pg_temp")?;
    // Row security forced on the owner would hide rows (or whole tables) from the sample: off
    // while it runs, then back.
    let user_tables = "relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)";
    let forced = crate::sql::lift_forced_row_security(session, user_tables)?;
    let findings = sample(session);
    crate::sql::force_row_security(session, &forced)?;
    session.execute("RESET search_path")?;
    findings
}

/// The findings of every column [`scan`] looks at.
fn sample(session: &mut Session) -> Result<Vec<PiiFinding>, SessionError> {
    let mut findings = Vec::new();
    for column in session.rows(COLUMNS)? {
        let text = |i: usize| column.get(i).cloned().flatten().unwrap_or_default();
        let (schema, table, name, json) = (text(0), text(1), text(2), text(3) == "t");
        let (col, relation) = (ident(&name), format!("{}.{}", ident(&schema), ident(&table)));
        let sql = if json {
            format!(
                "SELECT {col}::text FROM {relation} WHERE {col} IS NOT NULL \
                 AND octet_length({col}::text) <= {DOCUMENT_BYTES} LIMIT {SAMPLE}"
            )
        } else {
            format!(
                "SELECT substr({col}::text, 1, {}) FROM {relation} WHERE {col} IS NOT NULL LIMIT {SAMPLE}",
                VALUE_BYTES + 1
            )
        };
        // A table the user cannot read (row security) is skipped, not fatal.
        let Ok(rows) = session.rows(&sql) else { continue };
        let values: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            // Cut short by the server: no e-mail, phone or card is that long.
            .map(|v| if v.chars().count() > VALUE_BYTES { String::from("(long text)") } else { v })
            .collect();
        let table = format!("{schema}.{table}");
        findings.extend(judge(&table, &name, json, &values));
    }
    Ok(findings)
}

/// What a column's name and sampled values say (at most one finding per column or JSON path).
pub fn judge(table: &str, column: &str, json: bool, values: &[String]) -> Vec<PiiFinding> {
    let finding = |path: Vec<String>, kind: &str, evidence: String, strategy: MaskStrategy| PiiFinding {
        table: table.to_string(),
        column: column.to_string(),
        json_path: path.clone(),
        kind: kind.to_string(),
        evidence,
        suggested: MaskRule::new(table, column, strategy).at(path),
        covered: false,
    };
    if json {
        // Each path to a string value, judged by its values.
        let mut by_path: std::collections::BTreeMap<Vec<String>, Vec<String>> = std::collections::BTreeMap::new();
        for value in values {
            if let Ok(document) = serde_json::from_str::<serde_json::Value>(value) {
                strings(&document, &mut Vec::new(), &mut by_path);
            }
        }
        return by_path
            .into_iter()
            .filter_map(|(path, found)| {
                let (kind, strategy, matched) = by_content(&found)?;
                let evidence = format!("{matched} of {} sampled values", found.len());
                Some(finding(path, kind, evidence, strategy))
            })
            .collect();
    }
    if let Some((kind, strategy, matched)) = by_content(values) {
        return vec![finding(Vec::new(), kind, format!("{matched} of {} sampled values", values.len()), strategy)];
    }
    by_name(table, column)
        .map(|(kind, strategy)| vec![finding(Vec::new(), kind, "its name".into(), strategy)])
        .unwrap_or_default()
}

/// The string values of a JSON document, by path (at most 8 levels, at most [`PATHS`] paths).
fn strings(
    value: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut std::collections::BTreeMap<Vec<String>, Vec<String>>,
) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(values) = out.get_mut(path.as_slice()) {
                values.push(s.clone());
            } else if out.len() < PATHS {
                out.insert(path.clone(), vec![s.clone()]);
            }
        }
        serde_json::Value::Object(map) if path.len() < 8 => {
            for (key, v) in map {
                path.push(key.clone());
                strings(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The kind most sampled values look like, if at least half do.
fn by_content(values: &[String]) -> Option<(&'static str, MaskStrategy, usize)> {
    if values.is_empty() {
        return None;
    }
    type Kind = (&'static str, MaskStrategy, fn(&str) -> bool);
    let kinds: [Kind; 5] = [
        ("email", MaskStrategy::Email, is_email),
        ("card", MaskStrategy::Redact, is_card),
        ("national id", MaskStrategy::Redact, is_national_id),
        ("ip", MaskStrategy::Hash, is_ip),
        ("phone", MaskStrategy::Phone, is_phone),
    ];
    kinds.into_iter().find_map(|(kind, strategy, test)| {
        let matched = values.iter().filter(|v| test(v.trim())).count();
        #[allow(clippy::cast_precision_loss)]
        (matched as f64 >= SHARE * values.len() as f64).then_some((kind, strategy, matched))
    })
}

/// Tables of people: where a bare `name` column is a person's.
const PEOPLE: &[&str] = &[
    "user", "customer", "people", "person", "employee", "contact", "member", "patient", "client", "author", "staff",
    "student", "account",
];

fn by_name(table: &str, column: &str) -> Option<(&'static str, MaskStrategy)> {
    let name = column.to_ascii_lowercase();
    let table = table.rsplit('.').next().unwrap_or(table).to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| name == *w || name.contains(w));
    let of_people = PEOPLE.iter().any(|p| table.contains(p));
    if (name == "name" && of_people)
        || has(&[
            "first_name",
            "firstname",
            "last_name",
            "lastname",
            "full_name",
            "fullname",
            "surname",
            "given_name",
            "display_name",
            "contact_name",
        ])
    {
        return Some(("name", MaskStrategy::Name));
    }
    if has(&["address", "street", "addr_line", "postcode", "postal_code", "zip_code", "zipcode"]) {
        return Some(("address", MaskStrategy::Address));
    }
    None
}

fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else { return false };
    !local.is_empty()
        && !v.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
}

fn digits(v: &str) -> Option<Vec<u32>> {
    v.chars().filter(|c| !matches!(c, ' ' | '-')).map(|c| c.to_digit(10)).collect()
}

fn is_card(v: &str) -> bool {
    let Some(d) = digits(v) else { return false };
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| if i % 2 == 1 { if x * 2 > 9 { x * 2 - 9 } else { x * 2 } } else { x })
        .sum();
    sum.is_multiple_of(10)
}

/// A US social security number (`123-45-6789`) or a UK national insurance number (`AB123456C`).
fn is_national_id(v: &str) -> bool {
    let b = v.as_bytes();
    let ssn = b.len() == 11
        && b.iter().enumerate().all(|(i, c)| if i == 3 || i == 6 { *c == b'-' } else { c.is_ascii_digit() });
    let nino = b.len() == 9
        && b[..2].iter().all(u8::is_ascii_uppercase)
        && b[2..8].iter().all(u8::is_ascii_digit)
        && matches!(b[8], b'A'..=b'D');
    ssn || nino
}

fn is_ip(v: &str) -> bool {
    v.split('/').next().is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok())
}

fn is_phone(v: &str) -> bool {
    let digits = v.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && v.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.'))
        && (v.starts_with('+') || v.starts_with('(') || v.contains([' ', '-', '.']))
}

/// Marks the findings `rules` cover.
pub fn cover(findings: &mut [PiiFinding], rules: &[MaskRule]) {
    let masking = devdb_shared::api::Masking { rules: rules.to_vec(), ..Default::default() };
    for finding in findings {
        finding.covered = masking.covers(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_string()).collect()
    }

    #[test]
    fn values_are_recognised_by_what_they_look_like() {
        assert!(is_email("ada@example.com") && !is_email("not an@example.com") && !is_email("a@b"));
        assert!(is_card("4111 1111 1111 1111") && is_card("5500-0000-0000-0004") && !is_card("4111 1111 1111 1112"));
        assert!(is_national_id("123-45-6789") && is_national_id("AB123456C") && !is_national_id("123456789"));
        assert!(is_ip("10.0.0.1") && is_ip("2001:db8::1") && is_ip("10.0.0.0/8") && !is_ip("10.0.0"));
        assert!(is_phone("+44 20 7946 0042") && is_phone("(555) 123-4567") && !is_phone("20250101") && !is_phone("12"));
    }

    #[test]
    fn a_column_is_reported_when_half_its_sample_matches_or_by_its_name() {
        let emails = strings(&["ada@example.com", "grace@example.com", "n/a"]);
        let found = judge("public.customers", "contact", false, &emails);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].kind.as_str(), found[0].suggested.strategy), ("email", MaskStrategy::Email));
        assert_eq!(found[0].evidence, "2 of 3 sampled values");
        assert!(judge("public.t", "notes", false, &strings(&["a@b.c", "x", "y"])).is_empty(), "a third is not half");
        let by_name = judge("public.customers", "last_name", false, &strings(&["Lovelace"]));
        assert_eq!((by_name[0].kind.as_str(), by_name[0].evidence.as_str()), ("name", "its name"));
        assert!(judge("public.items", "name_of_product", false, &strings(&["widget"])).is_empty());
        assert!(judge("public.items", "name", false, &strings(&["widget"])).is_empty(), "a product's name");
        assert_eq!(judge("crm.customers", "name", false, &strings(&["Ada"])).len(), 1, "a customer's name");
    }

    #[test]
    fn values_inside_json_are_found_with_their_path() {
        let docs = strings(&[
            r#"{"contact": {"email": "ada@example.com"}, "tier": "gold"}"#,
            r#"{"contact": {"email": "g@example.org"}}"#,
        ]);
        let found = judge("public.customers", "profile", true, &docs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].json_path, vec!["contact".to_string(), "email".to_string()]);
        assert_eq!(found[0].suggested.json_path, found[0].json_path);
    }

    #[test]
    fn rules_cover_findings_by_table_column_and_path() {
        let mut found = judge("public.customers", "email", false, &strings(&["ada@example.com"]));
        let rule = |table: &str| MaskRule::new(table, "email", MaskStrategy::Email);
        cover(&mut found, &[rule("orders")]);
        assert!(!found[0].covered);
        cover(&mut found, &[rule("customers")]);
        assert!(found[0].covered, "customers is public.customers");
    }
}
