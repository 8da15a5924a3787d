//! Timestamps as the API shows them.

use std::time::SystemTime;

/// The current time as RFC 3339 (UTC, whole seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
