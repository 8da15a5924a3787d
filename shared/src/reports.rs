//! What the controller reports of use and of data (JSON, camelCase): each owner's use against
//! its quota (`GET /v1/usage`), the usage report over days (`GET /v1/reports/usage`) and a
//! project's personal-data scan (`POST /v1/projects/{name}/scan`). The server, the CLI and the
//! dashboard read and write them as these types.

use serde::{Deserialize, Serialize};

/// One owner's limits (absent: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// Bytes (`"50GiB"` in the file).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "bytes")]
    pub disk: Option<u64>,
}

mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`.
    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_u64(*bytes),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(u64),
            Text(String),
        }
        match Option::<Size>::deserialize(d)? {
            None => Ok(None),
            Some(Size::Bytes(b)) => Ok(Some(b)),
            Some(Size::Text(t)) => crate::size::parse(&t).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// What an owner uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub owner: String,
    pub databases: u64,
    pub running: u64,
    /// Bytes: each database counts its snapshot's size (what a clone starts with).
    pub disk: u64,
    pub quota: Limits,
}

/// One owner's use of one project over a report's period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub owner: String,
    pub project: String,
    pub databases_created: u32,
    pub databases_deleted: u32,
    /// Hours its databases ran, together.
    pub running_hours: f64,
    /// The sum of each database's largest size in the period.
    pub peak_disk_bytes: u64,
    /// The most sessions one of its databases had at once.
    pub peak_connections: u32,
}

/// `GET /v1/reports/usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// First and last day covered (UTC, inclusive).
    pub from: String,
    pub to: String,
    /// By owner, then project.
    pub rows: Vec<UsageRow>,
}

impl UsageReport {
    /// The rows of `owner`.
    pub fn owner_rows<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = &'a UsageRow> {
        self.rows.iter().filter(move |r| r.owner == owner)
    }

    /// The owners in the report, in order.
    pub fn owners(&self) -> Vec<&str> {
        let mut owners: Vec<&str> = self.rows.iter().map(|r| r.owner.as_str()).collect();
        owners.dedup();
        owners
    }

    /// The report as CSV, one row per owner and project (numbers unformatted).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "owner,project,databases_created,databases_deleted,running_hours,peak_disk_bytes,peak_connections\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{:.2},{},{}\n",
                csv_field(&r.owner),
                csv_field(&r.project),
                r.databases_created,
                r.databases_deleted,
                r.running_hours,
                r.peak_disk_bytes,
                r.peak_connections
            ));
        }
        out
    }
}

/// A CSV field, quoted when needed, and never starting a formula when opened in a spreadsheet.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text.to_string() };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// The personal-data scan of the project's snapshot: every column it found, with a suggested
/// rule and whether a rule covers it now.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// The snapshot scanned (its restore scans it, before masking).
    pub snapshot_created_at: Option<String>,
    pub findings: Vec<crate::api::PiiFinding>,
    /// Columns found but not listed (a restore Job reports at most 4 KiB of findings, those no
    /// rule masks first).
    #[serde(default, skip_serializing_if = "crate::api::is_zero")]
    pub unlisted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("kate"), "kate");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("\t=1"), "'\t=1");
    }
}
