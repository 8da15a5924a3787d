//! The state document's encryption: AES-256-GCM under a key derived from the installation's
//! backup secret (an HMAC of a fixed label, as each stanza's key is of its name), so the
//! document, like the stanzas, opens only with that secret.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// What a sealed document starts with: its format, in the clear (and authenticated).
const MAGIC: &[u8] = b"DEVDB-STATE 1\n";

/// Why a sealed document cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a DevDB state document (or one of a newer format)")]
    NotADocument,
    #[error(
        "the state document cannot be opened with this key: give the backup secret of the installation that \
         wrote it (a copy of its <data-dir>/backup/secret)"
    )]
    WrongKey,
    #[error("no randomness for a nonce")]
    Random,
}

fn key(secret: &[u8]) -> LessSafeKey {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&mac, b"devdb-dr:state");
    // An HMAC-SHA256 tag is exactly an AES-256 key long.
    let unbound = UnboundKey::new(&AES_256_GCM, tag.as_ref()).unwrap_or_else(|_| unreachable!("32 bytes"));
    LessSafeKey::new(unbound)
}

/// `plain`, encrypted under `secret`'s key with a fresh nonce.
///
/// # Errors
/// [`SealError::Random`] when the system has no randomness to give.
pub fn seal(secret: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
    let mut sealed = plain.to_vec();
    key(secret)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(MAGIC), &mut sealed)
        .map_err(|_| SealError::Random)?;
    Ok([MAGIC, &nonce, &sealed].concat())
}

/// What [`seal`] sealed, when `secret` is the one it was sealed under.
///
/// # Errors
/// [`SealError::NotADocument`], [`SealError::WrongKey`] (a changed byte included).
pub fn open(secret: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::NotADocument)?;
    if rest.len() < NONCE_LEN {
        return Err(SealError::NotADocument);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::NotADocument)?;
    let mut body = body.to_vec();
    let plain = key(secret).open_in_place(nonce, Aad::from(MAGIC), &mut body).map_err(|_| SealError::WrongKey)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_opens_with_its_secret_only_and_never_shows_its_text() {
        let sealed = seal(b"secret-one", b"password=hunter2").expect("sealed");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "nothing of it in the clear");
        assert_eq!(open(b"secret-one", &sealed).expect("opened"), b"password=hunter2");
        assert_eq!(open(b"secret-two", &sealed), Err(SealError::WrongKey));
        let mut changed = sealed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(open(b"secret-one", &changed), Err(SealError::WrongKey), "a changed byte is refused");
        assert_eq!(open(b"secret-one", b"{\"plain\": true}"), Err(SealError::NotADocument));
        assert_ne!(seal(b"secret-one", b"x").expect("again"), seal(b"secret-one", b"x").expect("again"));
    }
}
