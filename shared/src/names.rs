//! Names of database instances and projects: DNS labels, so that `<name>.<domain>` is a valid
//! host name and a valid Kubernetes object name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted name. Kubernetes allows 63, but names are embedded in derived object names
/// (`devdb-<project>`, `<database>-data`), so DevDB keeps a margin.
pub const MAX_NAME_LEN: usize = 40;

/// A validated name: `^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name {0:?} is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    #[error("name {0:?} must start with a lower-case letter")]
    BadStart(String),
    #[error("name {0:?} must end with a lower-case letter or digit")]
    BadEnd(String),
    #[error("name {0:?} may contain only lower-case letters, digits and '-'")]
    BadChar(String),
}

impl Name {
    /// Validates `s` as a name.
    ///
    /// # Errors
    /// A [`NameError`] saying which rule the string breaks.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        let bytes = s.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(NameError::Empty);
        };
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s));
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart(s));
        }
        if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-') {
            return Err(NameError::BadChar(s));
        }
        if *last == b'-' {
            return Err(NameError::BadEnd(s));
        }
        Ok(Self(s))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"))
            .description(Some("A DNS label: lower-case letters, digits and '-', starting with a letter"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Name {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "kate-pg", "db1", "a-b-c-9", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(Name::new(ok).map(|n| n.to_string()), Ok(ok.to_string()), "{ok}");
        }
    }

    #[test]
    fn rejects_each_broken_rule_with_its_reason() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert!(matches!(Name::new("a".repeat(MAX_NAME_LEN + 1)), Err(NameError::TooLong(_))));
        assert!(matches!(Name::new("1db"), Err(NameError::BadStart(_))));
        assert!(matches!(Name::new("-db"), Err(NameError::BadStart(_))));
        assert!(matches!(Name::new("Kate"), Err(NameError::BadStart(_))));
        assert!(matches!(Name::new("kate_pg"), Err(NameError::BadChar(_))));
        assert!(matches!(Name::new("kate.pg"), Err(NameError::BadChar(_))));
        assert!(matches!(Name::new("katE"), Err(NameError::BadChar(_))));
        assert!(matches!(Name::new("kate-"), Err(NameError::BadEnd(_))));
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<Name>("\"kate-pg\"").is_ok());
        let err = serde_json::from_str::<Name>("\"Kate\"").expect_err("refused").to_string();
        assert!(err.contains("lower-case letter"), "{err}");
    }
}
