//! SQL the restore writes itself: the settings of the sessions that read the dump's data, and the
//! row security forced on a table's owner lifted and forced again (the scan and the masking must
//! see every row). Identifiers and literals are quoted by [`devdb_pgctl::sql`].

use devdb_pgctl::session::{Session, SessionError};

/// The settings of the sessions that read the dump's data (the scan, the masking), in their start
/// packet, where they win over anything the dump set for its role or database: what the values
/// read out look like (encoding, array NULLs, dates), how the statements sent are read (quoting,
/// names), and nothing that would make them fail half-way (read-only transactions, timeouts).
pub const PINNED_OPTIONS: &str = "-c client_encoding=UTF8 -c array_nulls=on -c search_path=pg_catalog,pg_temp \
     -c standard_conforming_strings=on -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 \
     -c bytea_output=hex -c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 \
     -c idle_in_transaction_session_timeout=0 -c role=none";

/// Lifts row security forced on the owner (who may) from the tables of `pg_class` matching
/// `condition`; returns them, to give it back with [`force_row_security`].
pub fn lift_forced_row_security(session: &mut Session, condition: &str) -> Result<Vec<String>, SessionError> {
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
pub fn force_row_security(session: &mut Session, tables: &[String]) -> Result<(), SessionError> {
    tables.iter().try_for_each(|table| session.execute(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY")))
}
