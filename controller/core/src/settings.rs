//! The PostgreSQL parameters a database's owner may set (`PATCH /v1/databases/{name}` with
//! `settings`, `devdb db set NAME key=value`): an allow-list, each value checked before it
//! reaches the server, and whether a change needs a restart or a reload.
//!
//! What is allowed tunes queries, time limits and logging of one's own database. What is not:
//! anything that loads code or reads and writes files (`shared_preload_libraries`,
//! `archive_command`, `log_directory`, …), changes how clients reach the server or authenticate
//! (`listen_addresses`, `port`, `ssl*`, `password_encryption`), or could take the instance or
//! the machine down (`fsync`, `full_page_writes`, unbounded memory). PostgreSQL checks the value
//! again when it loads it.

use std::collections::BTreeMap;

/// What kind of value a parameter takes, and its bounds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A size with a unit (kB, MB, GB), between these many kB.
    Memory {
        min_kb: u64,
        max_kb: u64,
    },
    /// A duration (no unit: milliseconds; us, ms, s, min, h, d); `-1` or `0` where allowed.
    Duration {
        allow_minus_one: bool,
        max_ms: u64,
    },
    Integer {
        min: i64,
        max: i64,
    },
    Real {
        min: f64,
        max: f64,
    },
    Choice(&'static [&'static str]),
    Bool,
}

/// One parameter owners may set.
#[derive(Debug, Clone, Copy)]
pub struct Parameter {
    pub name: &'static str,
    kind: Kind,
    /// A change takes a restart (PostgreSQL's `postmaster` context), else a reload.
    pub restart: bool,
    /// Why it is allowed.
    pub why: &'static str,
}

const GB: u64 = 1 << 20; // in kB
const HOUR_MS: u64 = 3_600_000;

/// The allow-list.
pub const ALLOWED: &[Parameter] = &[
    Parameter {
        name: "work_mem",
        kind: Kind::Memory { min_kb: 64, max_kb: 2 * GB },
        restart: false,
        why: "memory of each sort and hash",
    },
    Parameter {
        name: "maintenance_work_mem",
        kind: Kind::Memory { min_kb: 1024, max_kb: 2 * GB },
        restart: false,
        why: "index builds and VACUUM",
    },
    Parameter {
        name: "effective_cache_size",
        kind: Kind::Memory { min_kb: 8, max_kb: 64 * GB },
        restart: false,
        why: "the planner's idea of the cache",
    },
    Parameter {
        name: "random_page_cost",
        kind: Kind::Real { min: 0.0, max: 100.0 },
        restart: false,
        why: "the planner's cost of a random read",
    },
    Parameter {
        name: "statement_timeout",
        kind: Kind::Duration { allow_minus_one: false, max_ms: 24 * HOUR_MS },
        restart: false,
        why: "cancel statements running longer (0: never)",
    },
    Parameter {
        name: "lock_timeout",
        kind: Kind::Duration { allow_minus_one: false, max_ms: 24 * HOUR_MS },
        restart: false,
        why: "give up waiting for a lock",
    },
    Parameter {
        name: "idle_in_transaction_session_timeout",
        kind: Kind::Duration { allow_minus_one: false, max_ms: 24 * HOUR_MS },
        restart: false,
        why: "end sessions idle inside a transaction",
    },
    Parameter {
        name: "log_min_duration_statement",
        kind: Kind::Duration { allow_minus_one: true, max_ms: 24 * HOUR_MS },
        restart: false,
        why: "log statements slower than this (-1: none)",
    },
    Parameter {
        name: "log_statement",
        kind: Kind::Choice(&["none", "ddl", "mod", "all"]),
        restart: false,
        why: "log statements by kind",
    },
    Parameter {
        name: "default_transaction_isolation",
        kind: Kind::Choice(&["read uncommitted", "read committed", "repeatable read", "serializable"]),
        restart: false,
        why: "match production's isolation",
    },
    Parameter { name: "jit", kind: Kind::Bool, restart: false, why: "just-in-time compilation of queries" },
    Parameter {
        name: "max_connections",
        kind: Kind::Integer { min: 5, max: 500 },
        restart: true,
        why: "connection pools of the application under test",
    },
    Parameter {
        name: "shared_buffers",
        kind: Kind::Memory { min_kb: 128, max_kb: 4 * GB },
        restart: true,
        why: "the server's cache",
    },
];

/// The parameter `name`, if owners may set it.
pub fn parameter(name: &str) -> Option<&'static Parameter> {
    ALLOWED.iter().find(|p| p.name == name)
}

/// The parameter `name` if owners may set it.
///
/// # Errors
/// A message for a 400 listing those they may.
pub fn allowed(name: &str) -> Result<&'static Parameter, String> {
    parameter(name).ok_or_else(|| {
        let names: Vec<&str> = ALLOWED.iter().map(|p| p.name).collect();
        format!("{name:?} cannot be set; these can: {}", names.join(", "))
    })
}

fn split_unit(value: &str) -> (&str, &str) {
    let at = value.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(value.len());
    (&value[..at], value[at..].trim())
}

/// Checks `value` for parameter `name`; returns it as it is written to the configuration.
///
/// # Errors
/// A message for a 400, naming the parameter and what it takes.
pub fn check(name: &str, value: &str) -> Result<String, String> {
    let parameter = allowed(name)?;
    let value = value.trim();
    let bad = |takes: &str| format!("{name} takes {takes}, not {value:?}");
    match parameter.kind {
        Kind::Memory { min_kb, max_kb } => {
            let (number, unit) = split_unit(value);
            let factor = match unit {
                "kB" => 1,
                "MB" => 1 << 10,
                "GB" => 1 << 20,
                _ => return Err(bad("a size with a unit (kB, MB, GB), e.g. 64MB")),
            };
            let kb = number.parse::<u64>().map_err(|_| bad("a size like 64MB"))?.saturating_mul(factor);
            if !(min_kb..=max_kb).contains(&kb) {
                return Err(format!("{name} must be between {min_kb}kB and {}MB, not {value}", max_kb >> 10));
            }
        }
        Kind::Duration { allow_minus_one, max_ms } => {
            let (number, unit) = split_unit(value);
            let n = number.parse::<i64>().map_err(|_| bad("a duration like 30s or 500ms"))?;
            if n == -1 && allow_minus_one && unit.is_empty() {
                return Ok(value.to_string());
            }
            let factor: u64 = match unit {
                "" | "ms" => 1,
                "s" => 1000,
                "min" => 60_000,
                "h" => HOUR_MS,
                "d" => 24 * HOUR_MS,
                _ => return Err(bad("a duration with a unit of ms, s, min, h or d")),
            };
            let ms = u64::try_from(n).map_err(|_| bad("a duration of 0 or more"))?.saturating_mul(factor);
            if ms > max_ms {
                return Err(format!("{name} must be at most 24h, not {value}"));
            }
        }
        Kind::Integer { min, max } => {
            let n = value.parse::<i64>().map_err(|_| bad("a whole number"))?;
            if !(min..=max).contains(&n) {
                return Err(format!("{name} must be between {min} and {max}, not {n}"));
            }
        }
        Kind::Real { min, max } => {
            let n = value.parse::<f64>().map_err(|_| bad("a number"))?;
            if !(min..=max).contains(&n) {
                return Err(format!("{name} must be between {min} and {max}, not {n}"));
            }
        }
        Kind::Choice(choices) => {
            let lower = value.to_ascii_lowercase();
            if !choices.contains(&lower.as_str()) {
                return Err(bad(&format!("one of {}", choices.join(", "))));
            }
            return Ok(lower);
        }
        Kind::Bool => {
            return match value.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => Ok("on".into()),
                "off" | "false" | "no" | "0" => Ok("off".into()),
                _ => Err(bad("on or off")),
            };
        }
    }
    Ok(value.to_string())
}

/// Whether going from `before` to `after` takes a restart (else a reload does).
pub fn needs_restart(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> bool {
    ALLOWED.iter().filter(|p| p.restart).any(|p| before.get(p.name) != after.get(p.name))
}

/// The settings as configuration lines (`name = 'value'`).
pub fn conf_lines(settings: &BTreeMap<String, String>) -> String {
    settings.iter().map(|(k, v)| format!("{k} = '{}'\n", v.replace('\'', "''"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_values_pass_normalised_and_others_are_refused_saying_what_is_taken() {
        assert_eq!(check("work_mem", "64MB"), Ok("64MB".into()));
        assert_eq!(check("statement_timeout", "30s"), Ok("30s".into()));
        assert_eq!(check("log_min_duration_statement", "-1"), Ok("-1".into()));
        assert_eq!(check("log_statement", "DDL"), Ok("ddl".into()));
        assert_eq!(check("jit", "false"), Ok("off".into()));
        assert_eq!(check("max_connections", "50"), Ok("50".into()));
        assert_eq!(check("random_page_cost", "1.1"), Ok("1.1".into()));
        for (name, value, says) in [
            ("shared_preload_libraries", "evil", "cannot be set; these can: work_mem"),
            ("archive_command", "curl …", "cannot be set"),
            ("work_mem", "64", "a size with a unit"),
            ("work_mem", "64MB'; archive_command='x", "a size with a unit"),
            ("work_mem", "100GB", "must be between 64kB and 2048MB"),
            ("statement_timeout", "2d", "at most 24h"),
            ("statement_timeout", "-5s", "a duration of 0 or more"),
            ("log_statement", "everything", "one of none, ddl, mod, all"),
            ("max_connections", "100000", "between 5 and 500"),
            ("jit", "maybe", "on or off"),
        ] {
            let error = check(name, value).expect_err(value);
            assert!(error.contains(says), "{name}={value}: {error}");
        }
    }

    #[test]
    fn only_changes_to_postmaster_parameters_take_a_restart() {
        let set = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(!needs_restart(&set(&[]), &set(&[("work_mem", "64MB")])));
        assert!(needs_restart(&set(&[]), &set(&[("max_connections", "50")])));
        assert!(!needs_restart(&set(&[("max_connections", "50")]), &set(&[("max_connections", "50"), ("jit", "off")])));
        assert!(needs_restart(&set(&[("shared_buffers", "256MB")]), &set(&[])), "removing one too");
        assert_eq!(conf_lines(&set(&[("log_statement", "all")])), "log_statement = 'all'\n");
    }
}
