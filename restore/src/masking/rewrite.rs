//! Masking the rows of one table: read out with `COPY … TO STDOUT`, masked here, spooled, copied
//! into a temporary table of the columns' own types and written back by `ctid`.

use devdb_pgctl::session::{Session, SessionError};

use super::columns::{Column, Output};
use super::text;
use super::values::Keyed;
use super::{MaskError, TableRules, VERIFY_SAMPLE, without_values};
use devdb_pgctl::sql::ident;

/// Masks the rows of `member` (a table of `table`'s family with storage; quoted): reads them
/// out, masks them here into `spool`, copies that into a temporary table and writes it back by
/// `ctid`. Returns a sample of originals when `sample`.
pub(super) fn rewrite(
    owner: &mut Session,
    key: &Keyed,
    (table, columns): (&TableRules<'_>, &[Column<'_>]),
    member: &str,
    sample: bool,
    spool: &std::path::Path,
) -> Result<Vec<String>, MaskError> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |error: SessionError| MaskError::Failed {
        table: table.table.clone(),
        column: columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        reason: without_values(&error),
    };
    let spooled = |e: std::io::Error| MaskError::Session(format!("writing the masked rows aside: {e}"));
    let per_row = columns.iter().any(|c| matches!(c.output(), Output::Shift { .. }));
    let mut select: Vec<String> = columns.iter().map(|c| format!("r.{}", ident(&c.name))).collect();
    if per_row {
        // The whole row, by its type's output function (a cast to text could be the dump's).
        select.push("r".into());
    }
    // The temporary table: the row's ctid, then a column per masked column that takes a value.
    let outputs: Vec<(usize, &Column<'_>)> =
        columns.iter().enumerate().filter(|(_, c)| c.output() != Output::Null).collect();
    let temp_columns: String = outputs
        .iter()
        .map(|(i, c)| match c.output() {
            Output::Shift { .. } => format!(", v{i} integer"),
            _ => format!(", v{i} {}", c.declared),
        })
        .collect();
    let create = format!("CREATE TEMPORARY TABLE devdb_masked (row_id tid{temp_columns}) ON COMMIT DROP");
    owner.execute_each(&["DROP TABLE IF EXISTS pg_temp.devdb_masked", &create]).map_err(failed)?;

    // Out: every row's originals, masked here, written aside as COPY text for the way back in.
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(spool).map_err(spooled)?,
    );
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); columns.len()];
    let mut trouble: Option<String> = None;
    let copy = format!("COPY (SELECT r.ctid, {} FROM ONLY {member} AS r) TO STDOUT", select.join(", "));
    let mut line_out = Vec::new();
    let mut copied = 0_u64;
    owner
        .copy_out(&copy, &mut |line| {
            copied += 1;
            let fields = text::copy_fields(line).map_err(std::io::Error::other)?;
            let row = if per_row { fields.last().cloned().flatten().unwrap_or_default() } else { String::new() };
            line_out.clear();
            line_out.extend_from_slice(fields.first().cloned().flatten().unwrap_or_default().as_bytes());
            for (i, column) in &outputs {
                let original = fields.get(i + 1).cloned().flatten();
                let found = &mut samples[*i];
                let mut seen = |value: &str| {
                    if sample && found.len() < VERIFY_SAMPLE && (8..=200).contains(&value.len()) {
                        found.push(value.to_string());
                    }
                };
                let masked = column.mask(key, original.as_deref(), &row, &mut seen).map_err(|reason| {
                    trouble.get_or_insert(format!("{}: {reason}", column.name));
                    std::io::Error::other("masking failed")
                })?;
                line_out.push(b'\t');
                text::push_copy_field(&mut line_out, masked.as_deref());
            }
            line_out.push(b'\n');
            out.write_all(&line_out)
        })
        .map_err(|error| match trouble.take() {
            Some(reason) => MaskError::Failed { table: table.table.clone(), column: String::new(), reason },
            None => failed(error),
        })?;
    out.flush().map_err(spooled)?;
    drop(out);

    // In, and back into the table by ctid.
    let mut file = std::fs::File::open(spool).map_err(spooled)?;
    let mut source = |chunk: &mut Vec<u8>| {
        chunk.resize(1 << 20, 0);
        let n = file.read(chunk)?;
        chunk.truncate(n);
        Ok(n > 0)
    };
    let outcome = owner.run(b"COPY pg_temp.devdb_masked FROM STDIN", Some(&mut source)).map_err(failed)?;
    if let Some(error) = outcome.error {
        return Err(failed(SessionError::Server(Box::new(error))));
    }
    let sets = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let column = ident(&c.name);
            match c.output() {
                Output::Null => format!("{column} = NULL"),
                Output::Value => format!("{column} = m.v{i}"),
                Output::Shift { days: true } => format!("{column} = r.{column} OPERATOR(pg_catalog.+) m.v{i}"),
                Output::Shift { days: false } => format!(
                    "{column} = r.{column} OPERATOR(pg_catalog.+) (m.v{i} OPERATOR(pg_catalog.*) interval '1 day')"
                ),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let updated = owner
        .execute_count(&format!(
            "UPDATE ONLY {member} AS r SET {sets} FROM pg_temp.devdb_masked AS m WHERE r.ctid OPERATOR(pg_catalog.=) m.row_id"
        ))
        .map_err(failed)?;
    // Every row read out is written back: rows moved meanwhile (the dump's code, run by a check
    // of the temporary table, updating the table) would otherwise keep their originals.
    if updated != copied {
        return Err(MaskError::Failed {
            table: member.to_string(),
            column: columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
            reason: format!(
                "{copied} rows were read out and {updated} written back: the table changed while it was masked (by the dump's own code)"
            ),
        });
    }
    owner.execute("DROP TABLE pg_temp.devdb_masked").map_err(failed)?;
    let _ = std::fs::remove_file(spool);
    Ok(samples.into_iter().flatten().collect())
}
