//! Masking a restored template before any clone exists: the project's rules are applied in the
//! project's database as the project's own user (never as superuser: a dump's triggers, index
//! expressions and check constraints run as whoever writes the rows), then everything that
//! could still hold an original value is rewritten or dropped.
//!
//! - **The key never enters the server.** Each masked table's rows are read out with `COPY …
//!   TO STDOUT` (each value by its type's own output function: no cast, operator or function a
//!   dump could define sees an original), masked here ([`values`], keyed by the project's
//!   secret), copied into a temporary table whose columns have the masked columns' own types,
//!   and written back by one `UPDATE … FROM` joined on `ctid`. The code a dump defined that an
//!   update runs (a check constraint, a domain's check, an index expression, a generated
//!   column) sees masked values only, and nothing anywhere holds the key: no setting, no
//!   parameter, no statement text, no catalog.
//! - **Every strategy on every column type it accepts.** Text strategies (email, name, phone,
//!   address, hash, redact) take text-like columns (`text`, `varchar`, `char`, `citext`, and
//!   domains over them), arrays of them (element by element) and JSON (`json`, `jsonb`: every
//!   string value, or the value at `jsonPath`); `dateShift` takes `date` and `timestamp(tz)`;
//!   `null`, `constant` and `keep` take any column. Anything else is refused before anything
//!   is changed, naming the column and its type ([`check_columns`]).
//! - Errors name the table, the column, the SQLSTATE and the constraint, never a value: the
//!   server's DETAIL quotes rows and keys, and the project's error is shown to every user.
//! - All rules run in one transaction. The masked tables' own triggers and rules are disabled
//!   meanwhile (an audit trigger would copy the originals elsewhere) and put back as they were;
//!   so is row security forced on their owner (a policy would hide rows from the updates).
//!   Populated materialized views are refreshed from the masked rows. The foreign keys
//!   touching masked tables are dropped and added again afterwards, which checks them: a key
//!   and its references get the same masked value from the same input. Unique and check
//!   constraints are enforced as usual.
//! - Afterwards: `VACUUM FULL` of each masked table (new files for the heap, its TOAST and its
//!   indexes; the old ones are unlinked); every statistic deleted (`pg_statistic` and extended
//!   statistics: they sample column values, and a column set to `STATISTICS 0` would keep its
//!   old ones), `ANALYZE`, and both catalogs rewritten; and, once the server has stopped
//!   cleanly, `pg_resetwal` (the WAL of the load holds every original row).

mod columns;
mod rewrite;
mod text;
mod values;

use std::os::unix::fs::OpenOptionsExt as _;

use devdb_pgctl::session::{Session, SessionError};
use devdb_shared::api::{MaskRule, MaskStrategy};

use crate::guard::Guard;
use crate::sql::{force_row_security, lift_forced_row_security};
use columns::{Column, check_columns};
use devdb_pgctl::sql::{ident, literal};
use values::Keyed;

/// Why rules cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    #[error("masking rule {index}: {reason}")]
    Rule { index: usize, reason: String },
    #[error("masking {table}.{column}: {reason}")]
    Failed { table: String, column: String, reason: String },
    #[error("masking: {0}")]
    Session(String),
}

/// The project's rules and secret key (never shown: its `Debug` leaves the key out).
#[derive(Clone)]
pub struct MaskPlan {
    pub rules: Vec<MaskRule>,
    /// At least 32 characters; never shown.
    pub key: String,
    /// Look for a sample of the originals in the template's files afterwards.
    pub verify: bool,
}

impl MaskPlan {
    /// The plan of a project's `masking` under `key`; none without rules (nothing to mask).
    pub fn of(masking: &devdb_shared::api::Masking, key: &str) -> Option<Self> {
        (!masking.rules.is_empty()).then(|| Self {
            rules: masking.rules.clone(),
            key: key.into(),
            verify: masking.verify,
        })
    }
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPlan").field("rules", &self.rules).field("key", &"…").field("verify", &self.verify).finish()
    }
}

/// Original values sampled per rule for the verification (text of 8 to 200 bytes: shorter ones
/// could match anything, longer ones may be stored compressed).
const VERIFY_SAMPLE: usize = 20;

/// Of `needles`, those found in the bytes of some regular file under `dir` (recursively, never
/// through a link), each with the file: one streamed pass over each file for all of them.
pub fn leaks(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, String)> {
    use std::io::Read as _;
    let Ok(finder) = aho_corasick::AhoCorasick::new(needles) else { return Vec::new() };
    // Chunks overlap by the longest needle, so one across a boundary is found too.
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let Ok(mut file) = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(&path)
        else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut window: Vec<u8> = Vec::with_capacity((1 << 20) + overlap);
        let mut chunk = vec![0_u8; 1 << 20];
        loop {
            let n = file.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            window.extend_from_slice(&chunk[..n]);
            for hit in finder.find_overlapping_iter(&window) {
                if seen.insert(hit.pattern().as_usize()) {
                    found.push((path.display().to_string(), needles[hit.pattern().as_usize()].to_string()));
                }
            }
            let keep = window.len().min(overlap);
            window.drain(..window.len() - keep);
        }
    }
    found
}

/// A session error as users may see it: a server's error without any value of the data (see
/// [`ServerError::without_values`](devdb_pgctl::session::ServerError::without_values)).
fn without_values(error: &SessionError) -> String {
    match error {
        SessionError::Server(server) => format!("{}: {}", server.severity, server.without_values()),
        other => other.to_string(),
    }
}

/// The rule's `schema.table` (`public` by default), owned.
fn table_name(rule: &MaskRule) -> Result<(String, String), String> {
    let (schema, name) =
        rule.schema_table().ok_or_else(|| format!("table {:?}: use table or schema.table", rule.table))?;
    Ok((schema.to_string(), name.to_string()))
}

/// The rules of one table.
#[derive(Debug, Clone)]
pub struct TableRules<'a> {
    /// `schema.table`.
    pub table: String,
    /// The same, quoted for SQL.
    pub relation: String,
    /// Each rule with its index in the plan; `keep` rules left out.
    pub rules: Vec<(usize, &'a MaskRule)>,
}

/// The rules grouped by table, in the order tables first appear.
///
/// # Errors
/// [`MaskError::Rule`] for a rule that cannot apply whatever the data (a bad table name, a
/// constant without a value, a bad day count, a column masked twice).
pub fn by_table(rules: &[MaskRule]) -> Result<Vec<TableRules<'_>>, MaskError> {
    let mut tables: Vec<TableRules<'_>> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let refuse = |reason: String| MaskError::Rule { index, reason };
        let (schema, table) = table_name(rule).map_err(refuse)?;
        if rule.column.is_empty() {
            return Err(refuse("no column".into()));
        }
        match rule.strategy {
            MaskStrategy::Constant if rule.value.is_none() => {
                return Err(refuse("the constant strategy needs a value".into()));
            }
            MaskStrategy::DateShift if !(1..=3650).contains(&rule.days.unwrap_or(30)) => {
                return Err(refuse("dateShift days must be 1 to 3650".into()));
            }
            MaskStrategy::Keep => continue,
            _ => {}
        }
        let name = format!("{schema}.{table}");
        let entry = match tables.iter_mut().position(|t| t.table == name) {
            Some(i) => &mut tables[i],
            None => {
                let relation = format!("{}.{}", ident(&schema), ident(&table));
                tables.push(TableRules { table: name, relation, rules: Vec::new() });
                tables.last_mut().expect("just pushed")
            }
        };
        let whole = |r: &MaskRule| r.json_path.is_empty();
        if entry
            .rules
            .iter()
            .any(|(_, r)| r.column == rule.column && (whole(r) || whole(rule) || r.json_path == rule.json_path))
        {
            return Err(refuse(format!("column {} is masked twice", rule.column)));
        }
        entry.rules.push((index, rule));
    }
    Ok(tables)
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Masked {
    /// The tables masked (`schema.table`).
    pub tables: Vec<String>,
    /// With `verify`: a sample of the original values, to look for in the files afterwards.
    pub originals: Vec<String>,
}

/// Applies `plan` in the project's database (`owner`: a session as the project's user there),
/// then, as superuser (`admin`, in the same database), rewrites the masked tables and the
/// statistics. `guard` is asked between tables; `spool` is a file this process may write the
/// masked rows of one table to on their way back in (removed after).
///
/// # Errors
/// [`MaskError`] naming the rule, or the table, column and constraint that refused.
pub fn apply(
    owner: &mut Session,
    admin: &mut Session,
    plan: &MaskPlan,
    guard: &Guard,
    spool: &std::path::Path,
) -> Result<Masked, MaskError> {
    let tables = by_table(&plan.rules)?;
    if tables.is_empty() {
        return Ok(Masked::default());
    }
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    // Identifiers are quoted here, literals written for standard strings, whatever the dump set
    // for its role or database.
    let setup = [
        "SET search_path = pg_catalog, pg_temp",
        "SET standard_conforming_strings = on",
        "SET DateStyle = ISO",
        "BEGIN",
    ];
    owner.execute_each(&setup).map_err(session)?;
    let result = mask(owner, plan, &tables, guard, spool);
    let _ = std::fs::remove_file(spool);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    owner
        .execute_each(&[end, "RESET search_path", "RESET standard_conforming_strings", "RESET DateStyle"])
        .map_err(session)?;
    let (stored, originals) = result?;
    // New files for each masked table (every partition and inheriting table), its TOAST table
    // and its indexes: the old ones, with the original rows in dead tuples and free space, are
    // unlinked. (Maintenance runs with the table owner's rights.)
    for table in &stored {
        admin.execute(&format!("VACUUM FULL {table}")).map_err(session)?;
    }
    // Statistics sample values: all gone (a column set to STATISTICS 0 would keep its old ones
    // through an ANALYZE), gathered again from the masked rows, the old rows rewritten away.
    admin
        .execute_each(&[
            "DELETE FROM pg_catalog.pg_statistic",
            "DELETE FROM pg_catalog.pg_statistic_ext_data",
            "ANALYZE",
            "VACUUM FULL pg_catalog.pg_statistic",
            "VACUUM FULL pg_catalog.pg_statistic_ext_data",
        ])
        .map_err(session)?;
    Ok(Masked { tables: tables.iter().map(|t| t.table.clone()).collect(), originals })
}

/// The masking transaction's body (see the module documentation). Masking a table masks its
/// partitions and inheriting tables too, so everything below is done to that whole family.
/// Returns the family's tables that have storage, and the originals sampled for the
/// verification.
fn mask(
    owner: &mut Session,
    plan: &MaskPlan,
    tables: &[TableRules<'_>],
    guard: &Guard,
    spool: &std::path::Path,
) -> Result<(Vec<String>, Vec<String>), MaskError> {
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    let text = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    // Tables only: a rule on a view would update the table beneath it, while everything below
    // would be done to the view.
    let names = tables.iter().map(|t| literal(&t.relation)).collect::<Vec<_>>().join(", ");
    let kinds = owner
        .rows(&format!(
            "SELECT c.relkind FROM unnest(ARRAY[{names}]) WITH ORDINALITY AS t(name, n) \
             LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) ORDER BY t.n"
        ))
        .map_err(session)?;
    for (table, row) in tables.iter().zip(&kinds) {
        match row.first().cloned().flatten().as_deref() {
            Some("r" | "p") => {}
            None => return Err(MaskError::Session(format!("table {} does not exist", table.table))),
            Some(_) => {
                return Err(MaskError::Session(format!(
                    "{} is not a table (a view, materialized view or foreign table): name the table it reads",
                    table.table
                )));
            }
        }
    }
    let columns: Vec<Vec<Column<'_>>> = tables.iter().map(|t| check_columns(owner, t)).collect::<Result<_, _>>()?;
    let family_of = |owner: &mut Session, relation: &str| {
        owner.rows(&format!(
            "WITH RECURSIVE family(oid) AS (SELECT {}::regclass::oid \
               UNION SELECT i.inhrelid FROM pg_inherits i JOIN family f ON i.inhparent = f.oid) \
             SELECT c.oid::text, c.oid::regclass::text, c.relkind FROM pg_class c WHERE c.oid IN (SELECT oid FROM family) ORDER BY c.oid",
            literal(relation)
        ))
    };
    let mut families = Vec::new();
    for table in tables {
        families.push(family_of(owner, &table.relation).map_err(session)?);
    }
    let every: Vec<&Vec<Option<String>>> = families.iter().flatten().collect();
    let oids = format!("ARRAY[{}]::oid[]", every.iter().map(|r| text(r, 0)).collect::<Vec<_>>().join(", "));
    let stored: Vec<String> = every.iter().filter(|r| text(r, 2) == "r").map(|r| text(r, 1)).collect();
    // Row security that applies to the owner too (FORCE) would hide rows from the updates, and
    // leave them as they were: off for the transaction.
    let forced = lift_forced_row_security(owner, &format!("oid = ANY ({oids})")).map_err(session)?;
    let foreign_keys = owner
        .rows(&format!(
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE contype = 'f' AND conparentid = 0 AND (conrelid = ANY ({oids}) OR confrelid = ANY ({oids})) ORDER BY oid"
        ))
        .map_err(session)?;
    let triggers = owner
        .rows(&format!(
            "SELECT tgrelid::regclass::text, quote_ident(tgname), tgenabled FROM pg_trigger \
             WHERE NOT tgisinternal AND tgrelid = ANY ({oids}) ORDER BY oid"
        ))
        .map_err(session)?;
    let rules = owner
        .rows(&format!(
            "SELECT ev_class::regclass::text, quote_ident(rulename), ev_enabled FROM pg_rewrite \
             WHERE ev_class = ANY ({oids}) AND rulename <> '_RETURN' ORDER BY oid"
        ))
        .map_err(session)?;
    for fk in &foreign_keys {
        owner.execute(&format!("ALTER TABLE {} DROP CONSTRAINT {}", text(fk, 0), text(fk, 1))).map_err(session)?;
    }
    for (rows, kind) in [(&triggers, "TRIGGER"), (&rules, "RULE")] {
        for row in rows {
            // ONLY: each member of the family is listed on its own (a partition's trigger may be
            // disabled where its parent's is not).
            let sql = format!("ALTER TABLE ONLY {} DISABLE {kind} {}", text(row, 0), text(row, 1));
            owner.execute(&sql).map_err(session)?;
        }
    }
    let key = Keyed::new(&plan.key);
    let mut originals = Vec::new();
    for ((table, columns), family) in tables.iter().zip(&columns).zip(&families) {
        for member in family.iter().filter(|r| text(r, 2) == "r") {
            guard.check().map_err(|e| MaskError::Session(e.to_string()))?;
            let sampled = rewrite::rewrite(owner, &key, (table, columns), &text(member, 1), plan.verify, spool)?;
            originals.extend(sampled);
        }
    }
    originals.sort();
    originals.dedup();
    // Put back as they were: O (origin), A (always), R (replica), D (disabled).
    for (rows, kind) in [(&triggers, "TRIGGER"), (&rules, "RULE")] {
        for row in rows {
            let how = match text(row, 2).as_str() {
                "A" => "ENABLE ALWAYS",
                "R" => "ENABLE REPLICA",
                "D" => continue,
                _ => "ENABLE",
            };
            let sql = format!("ALTER TABLE ONLY {} {how} {kind} {}", text(row, 0), text(row, 1));
            owner.execute(&sql).map_err(session)?;
        }
    }
    for fk in &foreign_keys {
        let (table, name, definition) = (text(fk, 0), text(fk, 1), text(fk, 2));
        owner.execute(&format!("ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")).map_err(|error| {
            MaskError::Failed {
                table: table.clone(),
                column: format!("foreign key {name}"),
                reason: without_values(&error),
            }
        })?;
    }
    // A materialized view holds its own copy of what it selected: made again from the masked
    // rows (its old file is unlinked at commit). Those never populated stay so.
    let views = owner
        .rows("SELECT oid::regclass::text FROM pg_class WHERE relkind = 'm' AND relispopulated ORDER BY oid")
        .map_err(session)?;
    for view in &views {
        let view = text(view, 0);
        owner.execute(&format!("REFRESH MATERIALIZED VIEW {view}")).map_err(|error| MaskError::Failed {
            table: view.clone(),
            column: "(materialized view)".into(),
            reason: without_values(&error),
        })?;
    }
    force_row_security(owner, &forced).map_err(session)?;
    Ok((stored, originals))
}

#[cfg(test)]
mod tests {
    use super::columns::{Output, Shape};
    use super::*;

    fn rule(table: &str, column: &str, strategy: MaskStrategy) -> MaskRule {
        MaskRule::new(table, column, strategy)
    }

    #[test]
    fn a_plan_never_shows_its_key() {
        let plan = MaskPlan { rules: vec![], key: "the-secret-key-of-the-project-0123".into(), verify: true };
        assert!(!format!("{plan:?}").contains("the-secret-key"), "{plan:?}");
    }

    #[test]
    fn rules_are_grouped_by_table_and_keep_changes_nothing() {
        let rules = [
            rule("customers", "email", MaskStrategy::Email),
            rule("customers", "name", MaskStrategy::Name),
            rule("sales.orders", "customer_email", MaskStrategy::Email),
            rule("customers", "notes", MaskStrategy::Keep),
        ];
        let tables = by_table(&rules).expect("valid");
        assert_eq!(tables.len(), 2);
        assert_eq!(
            (tables[0].table.as_str(), tables[0].relation.as_str()),
            ("public.customers", "\"public\".\"customers\"")
        );
        assert_eq!(tables[0].rules.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1], "keep is left out");
        assert_eq!(tables[1].relation, "\"sales\".\"orders\"");
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        let mut constant = rule("t", "c", MaskStrategy::Constant);
        assert!(by_table(std::slice::from_ref(&constant)).expect_err("no value").to_string().contains("rule 0"));
        constant.value = Some("n/a".into());
        assert!(by_table(&[constant]).is_ok());
        let twice = [rule("t", "c", MaskStrategy::Hash), rule("t", "c", MaskStrategy::Null)];
        assert!(by_table(&twice).expect_err("twice").to_string().contains("masked twice"));
        let paths = [
            rule("t", "j", MaskStrategy::Hash).at(vec!["a".into()]),
            rule("t", "j", MaskStrategy::Email).at(vec!["b".into()]),
        ];
        assert!(by_table(&paths).is_ok(), "two paths of one document");
        assert!(by_table(&[rule("a.b.c", "c", MaskStrategy::Hash)]).is_err());
        let mut shift = rule("t", "d", MaskStrategy::DateShift);
        shift.days = Some(0);
        assert!(by_table(&[shift]).is_err());
    }

    #[test]
    fn leaks_are_found_in_any_file_below_each_once_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("base/1")).expect("dirs");
        std::fs::write(dir.path().join("base/1/16384"), b"..ada@example.com..ada@example.com..").expect("write");
        std::fs::write(dir.path().join("pg_wal"), b"nothing here").expect("write");
        let found = leaks(dir.path(), &["ada@example.com", "grace@example.com"]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.ends_with("base/1/16384") && found[0].1 == "ada@example.com");
        assert!(leaks(dir.path(), &["grace@example.com"]).is_empty());
    }

    #[test]
    fn values_are_masked_by_the_shape_of_their_column() {
        let key = Keyed::new(&"k".repeat(40));
        let email = rule("t", "c", MaskStrategy::Email);
        let column = |shape, rules| Column { name: "c".into(), shape, declared: "text".into(), rules };
        let mut seen = |_: &str| {};
        let text = column(Shape::Text, vec![(0, &email)]);
        let masked = text.mask(&key, Some("ada@example.com"), "", &mut seen).expect("text").expect("value");
        assert!(masked.starts_with("user_"), "{masked}");
        assert_eq!(text.mask(&key, None, "", &mut seen).expect("null"), None, "a NULL stays NULL");
        let array = column(Shape::TextArray, vec![(0, &email)]);
        let masked_array =
            array.mask(&key, Some("{ada@example.com,NULL}"), "", &mut seen).expect("array").expect("value");
        assert_eq!(masked_array, format!("{{\"{masked}\",NULL}}"));
        let json = column(Shape::Json, vec![(0, &email)]);
        let doc =
            json.mask(&key, Some(r#"{"to": "ada@example.com", "n": 1}"#), "", &mut seen).expect("json").expect("value");
        assert_eq!(doc, format!(r#"{{"to": "{masked}", "n": 1}}"#));
        let null_at = rule("t", "c", MaskStrategy::Null).at(vec!["to".into()]);
        let at = column(Shape::Json, vec![(0, &null_at)]);
        assert_eq!(at.output(), Output::Value, "a null inside a document is a value of the column");
        assert_eq!(
            at.mask(&key, Some(r#"{"to": "x"}"#), "", &mut seen).expect("json").as_deref(),
            Some(r#"{"to": null}"#)
        );
        let null = rule("t", "c", MaskStrategy::Null);
        assert_eq!(column(Shape::Json, vec![(0, &null)]).output(), Output::Null);
    }
}
