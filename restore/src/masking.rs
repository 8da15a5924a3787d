//! Masking a restored template before any clone exists: the project's rules become SQL run in
//! the project's database as the project's own user (never as superuser: a dump's triggers,
//! index expressions and check constraints run as whoever writes the rows), then everything
//! that could still hold an original value is rewritten or dropped.
//!
//! - Every strategy is an SQL expression keyed by the project's secret, which reaches the server
//!   only as a bind parameter (`$1`) of each `UPDATE`: never in a catalog, a setting, a function
//!   body, a file, or the statement's text, so no function of the dump that the update runs
//!   (a check constraint, an index expression) can read it. The keyed hash is
//!   `sha256(k || tag || input)`: without `k`, no dictionary of inputs leads back from an output
//!   (and the e-mail strategy shows only 64 of its bits). The session's `search_path` is
//!   `pg_catalog, pg_temp`, so a dump's functions cannot stand in.
//! - Errors name the table, the column, the SQLSTATE and the constraint, never a value: the
//!   server's DETAIL quotes rows and keys, and the project's error is shown to every user.
//! - All rules run in one transaction. The masked tables' own triggers and rules are disabled
//!   meanwhile (an audit trigger would copy the originals elsewhere) and put back as they were;
//!   so is row security forced on their owner (a policy would hide rows from the updates).
//!   Populated materialized views are refreshed from the masked rows.
//!   The foreign keys touching masked tables are dropped and added again afterwards, which
//!   checks them: a key and its references get the same masked value from the same input.
//!   Unique and check constraints are enforced as usual. A violation fails the restore naming
//!   the table, the column and the constraint.
//! - Afterwards: `VACUUM FULL` of each masked table (new files for the heap, its TOAST and its
//!   indexes; the old ones are unlinked); every statistic deleted (`pg_statistic` and extended
//!   statistics: they sample column values, and a column set to `STATISTICS 0` would keep its
//!   old ones), `ANALYZE`, and both catalogs rewritten; and, once the server has stopped
//!   cleanly, `pg_resetwal` (the WAL of the load holds every original row).

use devdb_pgctl::session::{Session, SessionError};
use devdb_shared::api::{MaskRule, MaskStrategy};

use crate::template::{ident, literal};

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

/// A sample of the values `plan` masks, read before masking (in the masking transaction, as
/// the project's user), to look for afterwards with [`leaks`].
fn originals(owner: &mut Session, plan: &MaskPlan) -> Result<Vec<String>, MaskError> {
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    let mut values = Vec::new();
    for rule in plan.rules.iter().filter(|r| r.strategy != MaskStrategy::Keep) {
        let (schema, table) = table_name(rule).map_err(MaskError::Session)?;
        let column = ident(&rule.column);
        let value = if rule.json_path.is_empty() {
            format!("{column}::text")
        } else {
            let path = rule.json_path.iter().map(|k| literal(k)).collect::<Vec<_>>().join(", ");
            format!("({column}::jsonb #>> ARRAY[{path}])")
        };
        let sql = format!(
            "SELECT v FROM (SELECT {value} AS v FROM {}.{}) s WHERE length(v) BETWEEN 8 AND 200 LIMIT {VERIFY_SAMPLE}",
            ident(&schema),
            ident(&table)
        );
        let rows = owner.rows(&sql).map_err(session)?;
        values.extend(rows.into_iter().filter_map(|r| r.into_iter().next().flatten()));
    }
    values.sort();
    values.dedup();
    Ok(values)
}

/// Of `needles`, those found in the bytes of some file under `dir` (recursively), each with the
/// file: one pass over each file for all of them.
pub fn leaks(dir: &std::path::Path, needles: &[&str]) -> Vec<(String, String)> {
    let Ok(finder) = aho_corasick::AhoCorasick::new(needles) else { return Vec::new() };
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for hit in finder.find_overlapping_iter(&bytes) {
            if seen.insert(hit.pattern().as_usize()) {
                found.push((path.display().to_string(), needles[hit.pattern().as_usize()].to_string()));
            }
        }
    }
    found
}

const FIRST_NAMES: &[&str] = &[
    "Alex", "Blair", "Casey", "Dana", "Eli", "Frankie", "Gray", "Harper", "Indy", "Jules", "Kai", "Lee", "Morgan",
    "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor", "Uma", "Vic", "Wren", "Yael",
];
const LAST_NAMES: &[&str] = &[
    "Archer", "Brook", "Carter", "Dale", "Ellis", "Fisher", "Gale", "Hale", "Irving", "Jensen", "Keller", "Lane",
    "Mercer", "North", "Oakes", "Price", "Quarry", "Reed", "Stone", "Turner", "Vale", "West", "Young",
];
const STREETS: &[&str] =
    &["Maple", "Oak", "Pine", "Cedar", "Elm", "Birch", "Willow", "Ash", "Spruce", "Walnut", "Chestnut", "Laurel"];

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

/// The key as bytes, computed once per statement (an uncorrelated subquery is an init plan).
const KEY: &str = "(SELECT convert_to($1::text, 'UTF8'))";

/// The keyed hash of `input` (as text) under `tag`: 32 bytes.
fn keyed(tag: &str, input: &str) -> String {
    format!("sha256({KEY} || convert_to({} || ({input})::text, 'UTF8'))", literal(&format!("{tag}|")))
}

/// A seed from the key, computed once per statement, for the picks below.
const SEED: &str = "(SELECT ('x' || left(encode(sha256(convert_to($1::text, 'UTF8')), 'hex'), 15))::bit(60)::bigint)";

/// A number from 0 to `modulo - 1` picked by `input` under `tag` and the key: PostgreSQL's own
/// seeded hash, many times cheaper than SHA-256, for outputs of a few bits (a name from a list,
/// digits of a phone number) where a cryptographic hash would protect nothing more.
fn pick_number(tag: &str, input: &str, modulo: u64) -> String {
    format!(
        "(((hashtextextended({} || ({input})::text, {SEED}) % {modulo}) + {modulo}) % {modulo})",
        literal(&format!("{tag}|"))
    )
}

/// An element of `list` picked by `input` under `tag`.
fn pick(list: &[&str], tag: &str, input: &str) -> String {
    let array = list.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ");
    format!("(ARRAY[{array}])[1 + {}]", pick_number(tag, input, list.len() as u64))
}

/// The masked value of `value` (an SQL expression of the original, text for text strategies);
/// `row` is the whole row as text (for per-row strategies).
fn expression(rule: &MaskRule, value: &str, row: &str) -> Result<Option<String>, String> {
    Ok(Some(match rule.strategy {
        MaskStrategy::Keep => return Ok(None),
        MaskStrategy::Null => "NULL".into(),
        MaskStrategy::Constant => literal(rule.value.as_deref().ok_or("the constant strategy needs a value")?),
        MaskStrategy::Email => {
            format!("'user_' || left(encode({}, 'hex'), 16) || '@example.com'", keyed("email", value))
        }
        MaskStrategy::Hash => format!("encode({}, 'hex')", keyed("hash", value)),
        MaskStrategy::Name => {
            format!("{} || ' ' || {}", pick(FIRST_NAMES, "first", value), pick(LAST_NAMES, "last", value))
        }
        MaskStrategy::Phone => format!(
            "'+1 555 0' || lpad({}::text, 2, '0') || ' ' || lpad({}::text, 4, '0')",
            pick_number("phone-a", value, 100),
            pick_number("phone-b", value, 10_000)
        ),
        MaskStrategy::Address => format!(
            "(1 + {})::text || ' ' || {} || ' Street'",
            pick_number("number", value, 9999),
            pick(STREETS, "street", value)
        ),
        MaskStrategy::Redact => {
            format!("regexp_replace(regexp_replace(({value})::text, '[[:alpha:]]', 'x', 'g'), '[[:digit:]]', '0', 'g')")
        }
        MaskStrategy::DateShift => {
            let days = i64::from(rule.days.unwrap_or(30));
            if days == 0 || days > 3650 {
                return Err("dateShift days must be 1 to 3650".into());
            }
            let shift = pick_number("date", row, u64::try_from(2 * days + 1).unwrap_or(61));
            format!("({value}) + ({shift} - {days}) * interval '1 day'")
        }
    }))
}

/// One table's masking statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// `schema.table`.
    pub table: String,
    /// The same, quoted for SQL.
    pub relation: String,
    pub columns: Vec<String>,
    pub sql: String,
}

/// The rules of one table, by index.
type TableRules<'a> = ((String, String), Vec<(usize, &'a MaskRule)>);

/// The `UPDATE` statements for `rules`, one per table (all its masked columns at once), in the
/// order tables first appear; each names the table and columns it masks.
///
/// # Errors
/// [`MaskError::Rule`] for a rule that cannot be expressed (a bad table name, a constant
/// without a value, a bad day count, a column masked twice).
pub fn statements(rules: &[MaskRule]) -> Result<Vec<Update>, MaskError> {
    let mut tables: Vec<TableRules<'_>> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let table = table_name(rule).map_err(|reason| MaskError::Rule { index, reason })?;
        if rule.column.is_empty() {
            return Err(MaskError::Rule { index, reason: "no column".into() });
        }
        match tables.iter_mut().find(|(t, _)| *t == table) {
            Some((_, list)) => list.push((index, rule)),
            None => tables.push((table, vec![(index, rule)])),
        }
    }
    let mut out = Vec::new();
    for ((schema, table), list) in tables {
        let alias = "devdb_row";
        let mut sets: Vec<(String, String)> = Vec::new();
        for (index, rule) in &list {
            let column = ident(&rule.column);
            let row = format!("{alias}::text");
            let assignment = if rule.json_path.is_empty() {
                expression(rule, &format!("{alias}.{column}"), &row)
                    .map_err(|reason| MaskError::Rule { index: *index, reason })?
                    .map(|e| (column.clone(), e))
            } else {
                // A value inside a JSON document: replaced where present, as a JSON string
                // (null for the null strategy).
                let path =
                    format!("ARRAY[{}]", rule.json_path.iter().map(|k| literal(k)).collect::<Vec<_>>().join(", "));
                let current = sets
                    .iter()
                    .find(|(c, _)| *c == column)
                    .map_or_else(|| format!("{alias}.{column}::jsonb"), |(_, e)| format!("({e})::jsonb"));
                expression(rule, &format!("({alias}.{column}::jsonb #>> {path})"), &row)
                    .map_err(|reason| MaskError::Rule { index: *index, reason })?
                    .map(|e| {
                        let set = format!(
                            "CASE WHEN {current} #> {path} IS NULL THEN {current} ELSE jsonb_set({current}, {path}, to_jsonb({e})) END"
                        );
                        (column.clone(), set)
                    })
            };
            let Some((column, expression)) = assignment else { continue };
            match sets.iter_mut().find(|(c, _)| *c == column) {
                Some(existing) if !rule.json_path.is_empty() => existing.1 = expression,
                Some(_) => {
                    return Err(MaskError::Rule {
                        index: *index,
                        reason: format!("column {} is masked twice", rule.column),
                    });
                }
                None => sets.push((column, expression)),
            }
        }
        if sets.is_empty() {
            continue;
        }
        let qualified = format!("{}.{}", ident(&schema), ident(&table));
        // A NULL stays NULL (but for the constant strategy, whose output does not depend on it).
        let assignments = sets
            .iter()
            .map(|(column, e)| format!("{column} = CASE WHEN {alias}.{column} IS NULL THEN NULL ELSE ({e}) END"))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = list.iter().map(|(_, r)| r.column.clone()).collect();
        out.push(Update {
            table: format!("{schema}.{table}"),
            sql: format!("UPDATE {qualified} AS {alias} SET {assignments}"),
            relation: qualified,
            columns,
        });
    }
    Ok(out)
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
/// statistics.
///
/// # Errors
/// [`MaskError`] naming the rule, or the table, column and constraint that refused.
pub fn apply(owner: &mut Session, admin: &mut Session, plan: &MaskPlan) -> Result<Masked, MaskError> {
    let updates = statements(&plan.rules)?;
    if updates.is_empty() {
        return Ok(Masked::default());
    }
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    let tables: Vec<String> = updates.iter().map(|u| u.table.clone()).collect();
    // The statements' literals are written for standard strings, whatever the dump set for its
    // role or database (with backslash escapes, a rule's value could end its literal early).
    let setup = ["SET search_path = pg_catalog, pg_temp", "SET standard_conforming_strings = on", "BEGIN"];
    owner.execute_each(&setup).map_err(session)?;
    let result = mask(owner, plan, &updates);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    owner.execute_each(&[end, "RESET search_path", "RESET standard_conforming_strings"]).map_err(session)?;
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
    Ok(Masked { tables, originals })
}

/// The masking transaction's body (see the module documentation). An update of a table
/// updates its partitions and inheriting tables too, so everything below is done to that whole
/// family. Returns the family's tables that have storage, and the originals sampled for the
/// verification.
fn mask(owner: &mut Session, plan: &MaskPlan, updates: &[Update]) -> Result<(Vec<String>, Vec<String>), MaskError> {
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    // Tables only: a rule on a view would update the table beneath it, while everything below
    // would be done to the view.
    let names = updates.iter().map(|u| literal(&u.relation)).collect::<Vec<_>>().join(", ");
    let kinds = owner
        .rows(&format!(
            "SELECT c.relkind FROM unnest(ARRAY[{names}]) WITH ORDINALITY AS t(name, n) \
             LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) ORDER BY t.n"
        ))
        .map_err(session)?;
    for (update, row) in updates.iter().zip(&kinds) {
        let (table, kind) = (&update.table, row.first().cloned().flatten());
        match kind.as_deref() {
            Some("r" | "p") => {}
            None => return Err(MaskError::Session(format!("table {table} does not exist"))),
            Some(_) => {
                return Err(MaskError::Session(format!(
                    "{table} is not a table (a view, materialized view or foreign table): name the table it reads"
                )));
            }
        }
    }
    let named = format!("ARRAY[{names}]::regclass[]");
    let family = owner
        .rows(&format!(
            "WITH RECURSIVE family(oid) AS (SELECT unnest({named})::oid \
               UNION SELECT i.inhrelid FROM pg_inherits i JOIN family f ON i.inhparent = f.oid) \
             SELECT c.oid::text, c.oid::regclass::text, c.relkind FROM pg_class c WHERE c.oid IN (SELECT oid FROM family) ORDER BY c.oid"
        ))
        .map_err(session)?;
    let text = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let oids = format!("ARRAY[{}]::oid[]", family.iter().map(|r| text(r, 0)).collect::<Vec<_>>().join(", "));
    let stored: Vec<String> = family.iter().filter(|r| text(r, 2) == "r").map(|r| text(r, 1)).collect();
    // Row security that applies to the owner too (FORCE) would hide rows from the updates, and
    // leave them as they were: off for the transaction.
    let forced = lift_forced_row_security(owner, &format!("oid = ANY ({oids})")).map_err(session)?;
    let originals = if plan.verify { originals(owner, plan)? } else { Vec::new() };
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
    for update in updates {
        owner.execute_with(&update.sql, &[&plan.key]).map_err(|error| MaskError::Failed {
            table: update.table.clone(),
            column: update.columns.join(", "),
            reason: without_values(&error),
        })?;
    }
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

/// Lifts row security forced on the owner (who may) from the tables of `pg_class` matching
/// `condition`; returns them, to give it back with [`force_row_security`].
pub(crate) fn lift_forced_row_security(session: &mut Session, condition: &str) -> Result<Vec<String>, SessionError> {
    let forced: Vec<String> = session
        .rows(&format!("SELECT oid::regclass::text FROM pg_class WHERE relforcerowsecurity AND {condition}"))?
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    for table in &forced {
        session.execute(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))?;
    }
    Ok(forced)
}

/// Forces row security on the owner of `tables` again.
pub(crate) fn force_row_security(session: &mut Session, tables: &[String]) -> Result<(), SessionError> {
    tables.iter().try_for_each(|table| session.execute(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY")))
}

#[cfg(test)]
mod tests {
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
    fn rules_of_one_table_become_one_update_keyed_by_a_parameter() {
        let rules = [
            rule("customers", "email", MaskStrategy::Email),
            rule("customers", "name", MaskStrategy::Name),
            rule("sales.orders", "customer_email", MaskStrategy::Email),
            rule("customers", "notes", MaskStrategy::Keep),
        ];
        let updates = statements(&rules).expect("valid");
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].table, "public.customers");
        assert!(
            updates[0].sql.starts_with("UPDATE \"public\".\"customers\" AS devdb_row SET \"email\" = "),
            "{}",
            updates[0].sql
        );
        assert!(updates[0].sql.contains("convert_to($1::text, 'UTF8')"), "keyed by the parameter");
        assert!(!updates[0].sql.contains("current_setting"), "no setting holds the key");
        assert!(!updates[0].sql.contains("\"notes\" ="), "keep changes nothing");
        assert!(updates[1].sql.starts_with("UPDATE \"sales\".\"orders\""));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        let mut constant = rule("t", "c", MaskStrategy::Constant);
        assert!(statements(&[constant.clone()]).expect_err("no value").to_string().contains("rule 0"));
        constant.value = Some("n/a".into());
        assert!(statements(&[constant]).expect("valid")[0].sql.contains("'n/a'"));
        let twice = [rule("t", "c", MaskStrategy::Hash), rule("t", "c", MaskStrategy::Null)];
        assert!(statements(&twice).expect_err("twice").to_string().contains("masked twice"));
        assert!(statements(&[rule("a.b.c", "c", MaskStrategy::Hash)]).is_err());
        let mut shift = rule("t", "d", MaskStrategy::DateShift);
        shift.days = Some(0);
        assert!(statements(&[shift]).is_err());
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
    fn names_and_values_are_quoted() {
        let mut hostile = rule("t\"; DROP TABLE x; --", "c\"", MaskStrategy::Constant);
        hostile.value = Some("it's".into());
        let sql = &statements(&[hostile]).expect("valid")[0].sql;
        assert!(
            sql.contains("\"t\"\"; DROP TABLE x; --\"") && sql.contains("\"c\"\"\"") && sql.contains("'it''s'"),
            "{sql}"
        );
    }
}
