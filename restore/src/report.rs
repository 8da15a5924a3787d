//! What a restore Job tells its controller when it succeeds: the personal-data scan's findings
//! and the masking verification, written as the Job's termination message (Kubernetes shows it
//! in the pod's status, where the controller reads it).
//!
//! Kubernetes keeps at most [`LIMIT`] bytes of that message, so findings travel in a compact
//! form, those no rule masks first; what does not fit is counted (in all, and unmasked), never
//! dropped silently. Only `devdb-restore` writes the message file: the dump, restored as a
//! non-superuser, cannot reach it.

use devdb_shared::api::{MaskRule, MaskStrategy, PiiFinding};
use serde::{Deserialize, Serialize};

/// The most of a termination message Kubernetes keeps.
pub const LIMIT: usize = 4096;

/// A restore's outcome for its controller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// The columns the scan found, marked covered by the rules applied.
    pub findings: Vec<PiiFinding>,
    /// Found but left out for size: in all, and of those, not covered by a rule.
    pub unlisted: u64,
    pub unlisted_unmasked: u64,
    /// With masking verification: the sampled originals looked for and not found.
    pub verified: Option<u64>,
    /// The [`rules_digest`] of the masking rules applied (none: no rules).
    pub masked_with: Option<String>,
}

/// A digest of masking rules (SHA-256 of their JSON, 32 hex digits): a restore Job reports the
/// rules it applied by it, and the controller checks them against the project's.
pub fn rules_digest(rules: &[MaskRule]) -> String {
    let json = serde_json::to_vec(rules).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &json);
    digest.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// One finding on the wire: table, column, JSON path, kind, evidence, suggested strategy,
/// covered.
type WireFinding = (String, String, Vec<String>, String, String, MaskStrategy, bool);

/// The message as JSON; `devdbRestoreReport` tells it from any other termination message.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    devdb_restore_report: u32,
    findings: Vec<WireFinding>,
    #[serde(default)]
    unlisted: u64,
    #[serde(default)]
    unlisted_unmasked: u64,
    #[serde(default)]
    verified: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    masked_with: Option<String>,
}

const VERSION: u32 = 1;

impl Report {
    /// The report as a message of at most `limit` bytes: unmasked findings first, then as many
    /// of the rest as fit; the others are counted.
    pub fn encode(&self, limit: usize) -> String {
        let mut findings: Vec<&PiiFinding> = self.findings.iter().collect();
        findings.sort_by_key(|f| f.covered);
        let wire = |listed: &[&PiiFinding]| {
            let left_out = &findings[listed.len()..];
            let unmasked = left_out.iter().filter(|f| !f.covered).count() as u64;
            Wire {
                devdb_restore_report: VERSION,
                findings: listed.iter().map(|f| to_wire(f)).collect(),
                unlisted: self.unlisted + left_out.len() as u64,
                unlisted_unmasked: self.unlisted_unmasked + unmasked,
                verified: self.verified,
                masked_with: self.masked_with.clone(),
            }
        };
        let text = |w: &Wire| serde_json::to_string(w).unwrap_or_default();
        // Each finding's own length, then drop from the end until the whole fits (the counts'
        // digits may still push it over by a few bytes).
        let sizes: Vec<usize> = findings.iter().map(|f| text_len(&to_wire(f)) + 1).collect();
        let base = text(&wire(&[])).len();
        let mut fitting = 0;
        let mut total = base;
        while fitting < sizes.len() && total + sizes[fitting] <= limit {
            total += sizes[fitting];
            fitting += 1;
        }
        loop {
            let message = text(&wire(&findings[..fitting]));
            if message.len() <= limit || fitting == 0 {
                return message;
            }
            fitting -= 1;
        }
    }

    /// Reads a message [`Report::encode`] wrote; `None` for anything else (a failure's reason,
    /// an image older than the controller).
    pub fn decode(message: &str) -> Option<Self> {
        let wire: Wire = serde_json::from_str(message.trim()).ok()?;
        if wire.devdb_restore_report != VERSION {
            return None;
        }
        Some(Self {
            findings: wire.findings.into_iter().map(from_wire).collect(),
            unlisted: wire.unlisted,
            unlisted_unmasked: wire.unlisted_unmasked,
            verified: wire.verified,
            masked_with: wire.masked_with,
        })
    }
}

fn to_wire(f: &PiiFinding) -> WireFinding {
    (
        f.table.clone(),
        f.column.clone(),
        f.json_path.clone(),
        f.kind.clone(),
        f.evidence.clone(),
        f.suggested.strategy,
        f.covered,
    )
}

fn from_wire((table, column, json_path, kind, evidence, strategy, covered): WireFinding) -> PiiFinding {
    let suggested = MaskRule::new(&table, &column, strategy).at(json_path.clone());
    PiiFinding { table, column, json_path, kind, evidence, suggested, covered }
}

fn text_len(finding: &WireFinding) -> usize {
    serde_json::to_string(finding).map_or(0, |s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(table: &str, column: &str, covered: bool) -> PiiFinding {
        from_wire((
            table.into(),
            column.into(),
            Vec::new(),
            "email".into(),
            "20 of 20 sampled values".into(),
            MaskStrategy::Email,
            covered,
        ))
    }

    #[test]
    fn a_report_round_trips_through_its_message() {
        let mut json = finding("public.orders", "details", false);
        json.json_path = vec!["contact".into(), "email".into()];
        json.suggested.json_path = json.json_path.clone();
        let report = Report {
            findings: vec![json, finding("public.customers", "email", true)],
            verified: Some(40),
            masked_with: Some(rules_digest(&[MaskRule::new("customers", "email", MaskStrategy::Email)])),
            ..Report::default()
        };
        let message = report.encode(LIMIT);
        assert_eq!(Report::decode(&message), Some(report));
        assert_eq!(Report::decode("restore failed: the disk is full"), None);
        assert_eq!(
            Report::decode(r#"{"devdbRestoreReport":2,"findings":[]}"#),
            None,
            "a newer format is not guessed at"
        );
    }

    #[test]
    fn what_does_not_fit_is_counted_and_unmasked_columns_are_listed_first() {
        let mut findings: Vec<PiiFinding> =
            (0..200).map(|i| finding("public.people", &format!("column_{i}"), i % 8 != 0)).collect();
        findings.rotate_left(1);
        let report = Report { findings, verified: None, ..Report::default() };
        let message = report.encode(LIMIT);
        assert!(message.len() <= LIMIT, "{} bytes", message.len());
        let read = Report::decode(&message).expect("a report");
        let listed = read.findings.len() as u64;
        assert!(listed > 20 && read.unlisted > 0, "{listed} listed, {} not", read.unlisted);
        assert_eq!(listed + read.unlisted, 200);
        // 25 are unmasked: all of them fit, ahead of the covered ones.
        assert!(listed > 25, "{listed} listed");
        assert!(read.findings[..25].iter().all(|f| !f.covered));
        assert!(read.findings[25..].iter().all(|f| f.covered));
        assert_eq!(read.unlisted_unmasked, 0);
        // With a tiny limit, unmasked ones are left out too, and counted as such.
        let tiny = Report::decode(&report.encode(600)).expect("a report");
        assert!(tiny.unlisted_unmasked > 0 && tiny.findings.iter().all(|f| !f.covered));
        assert_eq!(tiny.findings.len() as u64 + tiny.unlisted_unmasked, 25);
    }

    #[test]
    fn a_digest_tells_rules_apart() {
        let email = MaskRule::new("customers", "email", MaskStrategy::Email);
        let digest = rules_digest(std::slice::from_ref(&email));
        assert_eq!(digest.len(), 32);
        assert_eq!(digest, rules_digest(std::slice::from_ref(&email)), "the same rules, the same digest");
        assert_ne!(digest, rules_digest(&[MaskRule::new("customers", "email", MaskStrategy::Hash)]));
        assert_ne!(digest, rules_digest(&[]));
    }
}
