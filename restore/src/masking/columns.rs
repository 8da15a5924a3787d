//! The masked columns of a table: what each column's type takes ([`check_columns`], before
//! anything changes), and each value masked by the shape of its column ([`Column::mask`]).

use devdb_pgctl::session::{Session, SessionError};
use devdb_shared::api::{MaskRule, MaskStrategy};

use super::text::{self, JsonEdit};
use super::values::Keyed;
use super::{MaskError, TableRules, without_values};
use devdb_pgctl::sql::literal;

/// What a column's values are, by its type (domains judged by what they are over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Text,
    TextArray,
    Json,
    /// `date` (days), or `timestamp`/`timestamptz`.
    Date {
        days: bool,
    },
    Other,
}

/// A masked column of a table: its shape, declared type (for the temporary table) and rules.
#[derive(Debug)]
pub(super) struct Column<'a> {
    pub(super) name: String,
    pub(super) shape: Shape,
    pub(super) declared: String,
    pub(super) rules: Vec<(usize, &'a MaskRule)>,
}

/// The masked columns of `table`, checked against their rules: each strategy must fit its
/// column's type (see the module documentation).
///
/// # Errors
/// [`MaskError::Failed`] naming the column, its type and why, before anything is changed.
pub(super) fn check_columns<'a>(owner: &mut Session, table: &TableRules<'a>) -> Result<Vec<Column<'a>>, MaskError> {
    let session = |e: SessionError| MaskError::Session(without_values(&e));
    let rows = owner
        .rows(&format!(
            "WITH RECURSIVE cols AS ( \
               SELECT a.attnum, a.attname::text AS name, a.atttypid AS typ, format_type(a.atttypid, a.atttypmod) AS declared, \
                      a.attnotnull, a.attgenerated <> '' AS generated \
               FROM pg_attribute a WHERE a.attrelid = {}::regclass AND a.attnum > 0 AND NOT a.attisdropped), \
             base(attnum, typ) AS (SELECT attnum, typ FROM cols \
               UNION ALL SELECT b.attnum, t.typbasetype FROM base b JOIN pg_type t ON t.oid = b.typ WHERE t.typtype = 'd') \
             SELECT c.name, c.declared, c.attnotnull, c.generated, t.typname, t.typcategory, e.typcategory \
             FROM cols c JOIN base b ON b.attnum = c.attnum JOIN pg_type t ON t.oid = b.typ AND t.typtype <> 'd' \
             LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' ORDER BY c.attnum",
            literal(&table.relation)
        ))
        .map_err(session)?;
    let mut columns: Vec<Column<'a>> = Vec::new();
    for &(index, rule) in &table.rules {
        let failed =
            |reason: String| MaskError::Failed { table: table.table.clone(), column: rule.column.clone(), reason };
        let field = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let row = rows
            .iter()
            .find(|row| field(row, 0) == rule.column)
            .ok_or_else(|| failed(format!("table {} has no column {:?}", table.table, rule.column)))?;
        let (declared, not_null, generated) = (field(row, 1), field(row, 2) == "t", field(row, 3) == "t");
        let shape = match (field(row, 4).as_str(), field(row, 5).as_str(), field(row, 6).as_str()) {
            ("json" | "jsonb", ..) => Shape::Json,
            ("date", ..) => Shape::Date { days: true },
            ("timestamp" | "timestamptz", ..) => Shape::Date { days: false },
            (_, "S", _) => Shape::Text,
            (_, "A", "S") => Shape::TextArray,
            _ => Shape::Other,
        };
        if generated {
            return Err(failed("it is a generated column: mask the columns it is computed from".into()));
        }
        let fits = match rule.strategy {
            MaskStrategy::Keep | MaskStrategy::Constant => true,
            MaskStrategy::Null => !not_null || !rule.json_path.is_empty(),
            MaskStrategy::DateShift => matches!(shape, Shape::Date { .. }) && rule.json_path.is_empty(),
            _ if !rule.json_path.is_empty() => shape == Shape::Json,
            _ => matches!(shape, Shape::Text | Shape::TextArray | Shape::Json),
        };
        if !fits {
            let why = match rule.strategy {
                MaskStrategy::Null => "the column is NOT NULL".to_string(),
                MaskStrategy::DateShift => "dateShift takes date and timestamp columns".to_string(),
                _ if !rule.json_path.is_empty() => "a jsonPath needs a json or jsonb column".to_string(),
                _ => format!(
                    "{:?} takes text-like columns (text, varchar, char, citext, domains over them), arrays of them and json/jsonb",
                    rule.strategy
                ),
            };
            return Err(failed(format!("the column is {declared}: {why}")));
        }
        if rule.strategy == MaskStrategy::Constant
            && rule.json_path.is_empty()
            && shape == Shape::Json
            && serde_json::from_str::<serde_json::Value>(rule.value.as_deref().unwrap_or_default()).is_err()
        {
            return Err(failed(format!("the column is {declared}: a constant for it must be a JSON document")));
        }
        match columns.iter_mut().find(|c| c.name == rule.column) {
            Some(column) => column.rules.push((index, rule)),
            None => columns.push(Column { name: rule.column.clone(), shape, declared, rules: vec![(index, rule)] }),
        }
    }
    Ok(columns)
}

/// What a column is set to, as the `UPDATE` says it (from the temporary table `m`'s column
/// `v<i>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// `NULL`.
    Null,
    /// The masked value, of the column's own type.
    Value,
    /// The original shifted by `m.v<i>` days.
    Shift { days: bool },
}

impl Column<'_> {
    pub(super) fn output(&self) -> Output {
        match self.rules.as_slice() {
            [(_, rule)] if rule.json_path.is_empty() && rule.strategy == MaskStrategy::Null => Output::Null,
            [(_, rule)] if rule.strategy == MaskStrategy::DateShift => {
                Output::Shift { days: matches!(self.shape, Shape::Date { days: true }) }
            }
            _ => Output::Value,
        }
    }

    /// The column's masked value (COPY text, `None` for NULL) from its original; `row` is the
    /// whole row's text (date shifts are per row). A NULL stays NULL (but for a constant).
    /// `seen` is shown each original value a text strategy replaces (for the verification's
    /// sample).
    pub(super) fn mask(
        &self,
        key: &Keyed,
        original: Option<&str>,
        row: &str,
        seen: &mut dyn FnMut(&str),
    ) -> Result<Option<String>, String> {
        let [(_, first), ..] = self.rules.as_slice() else { return Ok(original.map(str::to_string)) };
        if first.json_path.is_empty() {
            let mut text = |value: &str| {
                seen(value);
                key.text(first, value).unwrap_or_default()
            };
            return Ok(match (first.strategy, original) {
                (MaskStrategy::Constant, _) => first.value.clone(),
                (MaskStrategy::DateShift, Some(_)) => Some(key.shift(row, first.days.unwrap_or(30)).to_string()),
                (_, None) | (MaskStrategy::Null, _) => None,
                (_, Some(value)) => Some(match self.shape {
                    Shape::TextArray => text::map_array(value, &mut text)?,
                    Shape::Json => text::edit_json(value, JsonEdit::Strings(&mut text))?,
                    _ => text(value),
                }),
            });
        }
        // Rules at JSON paths, one after the other on the same document.
        let Some(mut document) = original.map(str::to_string) else { return Ok(None) };
        for (_, rule) in &self.rules {
            let mut mask = |value: &str| {
                seen(value);
                key.text(rule, value)
            };
            document = text::edit_json(&document, JsonEdit::At(&rule.json_path, &mut mask))?;
        }
        Ok(Some(document))
    }
}
