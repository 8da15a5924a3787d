//! API tokens: who a request comes from, and what it may see.
//!
//! Without configured tokens (allowed only on loopback) every request acts as admin. With
//! tokens, every request needs `Authorization: Bearer <token>`; an owner's token sees and changes
//! only that owner's objects.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Owner(String),
}

impl Caller {
    /// Whether the caller may see or change an object owned by `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Owner(me) => me == owner,
        }
    }

    /// The owner filter for a list that asked for `requested`: `Some(filter)`, or `None` when the
    /// caller may see nothing of it (an owner asking for another owner's objects).
    pub fn scope<'a>(&'a self, requested: Option<&'a str>) -> Option<Option<&'a str>> {
        match (self, requested) {
            (Self::Admin, requested) => Some(requested),
            (Self::Owner(me), Some(asked)) if asked != me => None,
            (Self::Owner(me), _) => Some(Some(me)),
        }
    }
}

/// Why the tokens file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("tokens file {path} is not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("tokens file {path}: each token needs an \"owner\" or \"admin\": true")]
    NoRole { path: String },
    #[error("API tokens must be at least 16 characters")]
    TooShort,
}

#[derive(Deserialize)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
struct TokenEntry {
    token: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, Caller>);

impl Tokens {
    /// Loads `file` (if any) plus one admin token (if any).
    ///
    /// # Errors
    /// [`TokensError`] naming the file and the problem.
    pub fn load(file: Option<&Path>, admin: Option<String>) -> Result<Self, TokensError> {
        let mut tokens = HashMap::new();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text =
                std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: shown.clone(), source })?;
            let parsed: TokensFile =
                serde_json::from_str(&text).map_err(|source| TokensError::Parse { path: shown.clone(), source })?;
            for entry in parsed.tokens {
                let caller = match (entry.admin, entry.owner) {
                    (true, _) => Caller::Admin,
                    (false, Some(owner)) => Caller::Owner(owner),
                    (false, None) => return Err(TokensError::NoRole { path: shown }),
                };
                tokens.insert(entry.token, caller);
            }
        }
        if let Some(token) = admin {
            tokens.insert(token, Caller::Admin);
        }
        if tokens.keys().any(|t| t.len() < 16) {
            return Err(TokensError::TooShort);
        }
        Ok(Self(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds an admin token (one `devdb up` makes for its own proxy).
    pub fn add_admin(&mut self, token: String) {
        self.0.insert(token, Caller::Admin);
    }

    /// The caller for an `Authorization` header value; `None` means refuse.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        if self.0.is_empty() {
            return Some(Caller::Admin);
        }
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        // Compare every token in constant time, so timing reveals nothing about near misses.
        let mut found = None;
        for (candidate, caller) in &self.0 {
            if candidate.len() == token.len() && bool::from(candidate.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// A strong random password: 24 characters from [A-Za-z0-9] (about 143 bits).
pub fn generate_password() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_callers_and_everything_else_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        std::fs::write(
            &path,
            r#"{"tokens":[{"token":"kate-token-0123456789","owner":"kate"},{"token":"root-token-0123456789","admin":true}]}"#,
        )
        .expect("write");
        let tokens = Tokens::load(Some(&path), None).expect("loads");
        assert_eq!(tokens.caller(Some("Bearer kate-token-0123456789")), Some(Caller::Owner("kate".into())));
        assert_eq!(tokens.caller(Some("Bearer root-token-0123456789")), Some(Caller::Admin));
        assert_eq!(tokens.caller(Some("Bearer kate-token-012345678")), None);
        assert_eq!(tokens.caller(Some("kate-token-0123456789")), None, "needs the Bearer scheme");
        assert_eq!(tokens.caller(None), None);
        assert_eq!(Tokens::default().caller(None), Some(Caller::Admin), "no tokens: loopback admin");
    }

    #[test]
    fn bad_token_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, r#"{"tokens":[{"token":"0123456789abcdef0123"}]}"#).expect("write");
        assert!(Tokens::load(Some(&path), None).expect_err("no role").to_string().contains("owner"));
        assert!(matches!(Tokens::load(None, Some("short".into())), Err(TokensError::TooShort)));
    }

    #[test]
    fn owners_see_only_their_own() {
        let kate = Caller::Owner("kate".into());
        assert!(kate.may_access("kate") && !kate.may_access("bob"));
        assert_eq!(kate.scope(Some("bob")), None, "another owner's list shows nothing");
        assert_eq!(kate.scope(Some("kate")), Some(Some("kate")));
        assert_eq!(kate.scope(None), Some(Some("kate")));
        assert_eq!(Caller::Admin.scope(Some("bob")), Some(Some("bob")));
    }
}
