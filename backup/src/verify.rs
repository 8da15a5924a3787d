//! What `pgbackrest verify` finds in a stanza's repository. pgBackRest 2.45 exits 0 when it
//! finds bad files (a checksum that does not match, a file the manifest lists missing): it logs
//! each one at `info` (`P01   INFO: invalid checksum '15-1/…/000000010000000000000005-….zst'`)
//! and ends its report with `status: error`; a file it cannot even read through (decryption or
//! decompression fails) is `invalid result <path>: [29] … zst error: …`, after retrying it (the
//! last retry 15 s later). This reads that output into [`Findings`].

/// What is wrong with one repository file, in pgBackRest's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Listed by a manifest (or the archive) but not in the repository.
    Missing,
    /// Its content does not match its checksum: corrupted (or replaced).
    InvalidChecksum,
    /// Its content is not the size its manifest records.
    InvalidSize,
    /// It could not be read through: its decryption or decompression failed (corrupted).
    InvalidResult,
}

impl Problem {
    /// pgBackRest's own words for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "file missing",
            Self::InvalidChecksum => "invalid checksum",
            Self::InvalidSize => "invalid size",
            Self::InvalidResult => "invalid result",
        }
    }

    fn from_words(words: &str) -> Option<Self> {
        [Self::Missing, Self::InvalidChecksum, Self::InvalidSize, Self::InvalidResult]
            .into_iter()
            .find(|p| p.as_str() == words)
    }
}

/// One bad file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    pub problem: Problem,
    /// Relative to the stanza's archive (`15-1/0000000100000000/…`, a WAL segment) or backup
    /// directory (`20261207-180341F/pg_data/…`, a backup's file).
    pub path: String,
}

/// A repository that failed verification: its bad files, and pgBackRest's report (its counts
/// per archive and backup).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the backup repository failed verification: {}", self.summary())]
pub struct Findings {
    pub bad_files: Vec<BadFile>,
    pub report: Vec<String>,
}

impl Findings {
    fn summary(&self) -> String {
        if self.bad_files.is_empty() {
            return self.report.join("; ");
        }
        let files: Vec<String> =
            self.bad_files.iter().map(|f| format!("{} '{}'", f.problem.as_str(), f.path)).collect();
        format!("{} bad file(s): {}", files.len(), files.join(", "))
    }
}

/// Reads what `pgbackrest verify --log-level-console=info` printed.
///
/// # Errors
/// [`Findings`] when it names a bad file or reports `status: error`.
pub fn check(output: &str) -> Result<(), Findings> {
    let mut bad_files = Vec::new();
    let mut report = Vec::new();
    let mut in_report = false;
    let mut failed = false;
    for line in output.lines() {
        let message = match line.split_once(" INFO: ") {
            Some((_, message)) => {
                in_report = message.starts_with("stanza: ");
                message
            }
            // The report's lines after its first are continuations, indented.
            None if in_report => line.trim(),
            None => continue,
        };
        if let Some(file) = bad_file(message) {
            bad_files.push(file);
        } else if in_report {
            failed |= message == "status: error";
            report.push(message.to_string());
        }
    }
    if bad_files.is_empty() && !failed {
        return Ok(());
    }
    Err(Findings { bad_files, report })
}

/// `invalid checksum '<path>'`, or `invalid result <path>: [<code>] <reason>`.
fn bad_file(message: &str) -> Option<BadFile> {
    if let Some(rest) = message.strip_prefix("invalid result ") {
        let (path, _reason) = rest.split_once(": [")?;
        return Some(BadFile { problem: Problem::InvalidResult, path: path.to_string() });
    }
    let (words, quoted) = message.split_once(" '")?;
    let path = quoted.strip_suffix('\'')?;
    Some(BadFile { problem: Problem::from_words(words)?, path: path.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pgBackRest 2.45 printed with a WAL segment and a backup's file corrupted.
    const CORRUPTED: &str = "\
2026-12-07 18:03:48.704 P00   INFO: verify command begin 2.45: --config=/tmp/exp/conf --exec-id=5434-6029119e --log-level-console=info --repo1-cipher-pass=<redacted> --stanza=s
2026-12-07 18:03:48.740 P02   INFO: invalid checksum '15-1/0000000100000000/000000010000000000000005-d2c5feb3dbe576bbc10417f9dd9a57b31fb679d0.zst'
2026-12-07 18:03:48.773 P01   INFO: invalid checksum '20261207-180341F/pg_data/global/1260.zst'
2026-12-07 18:03:48.877 P00   INFO: stanza: s
                                    status: error
                                      archiveId: 15-1, total WAL checked: 6, total valid WAL: 5
                                        checksum invalid: 1
                                      backup: 20261207-180341F, status: invalid, total files checked: 964, total valid files: 963
                                        checksum invalid: 1
2026-12-07 18:03:48.878 P00   INFO: verify command end: completed successfully (175ms)
";

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let findings = check(CORRUPTED).expect_err("bad files");
        assert_eq!(
            findings.bad_files,
            [
                BadFile {
                    problem: Problem::InvalidChecksum,
                    path: "15-1/0000000100000000/000000010000000000000005-d2c5feb3dbe576bbc10417f9dd9a57b31fb679d0.zst"
                        .into()
                },
                BadFile { problem: Problem::InvalidChecksum, path: "20261207-180341F/pg_data/global/1260.zst".into() },
            ]
        );
        assert_eq!(findings.report[..2], ["stanza: s", "status: error"]);
        assert_eq!(
            findings.to_string(),
            "the backup repository failed verification: 2 bad file(s): invalid checksum \
             '15-1/0000000100000000/000000010000000000000005-d2c5feb3dbe576bbc10417f9dd9a57b31fb679d0.zst', \
             invalid checksum '20261207-180341F/pg_data/global/1260.zst'"
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_through_is_named() {
        let out = "\
2026-12-07 18:08:52.009 P01   INFO: invalid result 15-1/0000000100000000/000000010000000000000006-c2a4.zst: [29] raised from local-1 protocol: zst error: [-10] Unknown frame descriptor
                                    [FormatError] on retry after 0ms
                                    [FormatError] on retry after 15000ms
2026-12-07 18:08:52.009 P00   INFO: stanza: s
                                    status: error
                                      archiveId: 15-1, total WAL checked: 6, total valid WAL: 5
                                        other: 1
";
        let findings = check(out).expect_err("a bad file");
        assert_eq!(
            findings.bad_files,
            [BadFile {
                problem: Problem::InvalidResult,
                path: "15-1/0000000100000000/000000010000000000000006-c2a4.zst".into()
            }]
        );
        assert!(!findings.report.iter().any(|l| l.contains("retry")), "{:?}", findings.report);
    }

    #[test]
    fn a_missing_file_is_named() {
        let out = "2026-12-07 18:03:15.653 P02   INFO: file missing '20261207-180248F/pg_data/global/1260.zst'\n\
                   2026-12-07 18:03:15.756 P00   INFO: stanza: s\n    status: error\n";
        let findings = check(out).expect_err("a missing file");
        assert_eq!(findings.bad_files[0].problem, Problem::Missing);
        assert_eq!(findings.bad_files[0].path, "20261207-180248F/pg_data/global/1260.zst");
    }

    #[test]
    fn an_error_status_without_a_file_is_still_an_error() {
        let out = "2026-12-07 18:00:00.000 P00   INFO: stanza: s\n    status: error\n    No usable backup.info file\n";
        let findings = check(out).expect_err("in error");
        assert!(findings.bad_files.is_empty());
        assert_eq!(
            findings.to_string(),
            "the backup repository failed verification: stanza: s; status: error; No usable backup.info file"
        );
    }

    #[test]
    fn a_sound_repository_passes() {
        let out = "\
2026-12-07 18:03:11.301 P00   INFO: verify command begin 2.45: --stanza=s
2026-12-07 18:03:11.375 P00   INFO: stanza: s
                                    status: ok
                                      archiveId: 15-1, total WAL checked: 2, total valid WAL: 2
2026-12-07 18:03:11.375 P00   INFO: verify command end: completed successfully (75ms)
";
        check(out).expect("sound");
        check("").expect("nothing printed");
    }
}
