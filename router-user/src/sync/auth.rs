//! The sync channel's authentication: shared keys from a file (rotation by listing the new
//! key first on every host, then removing the old one), one key per connection derived from
//! both sides' nonces, and an HMAC-SHA256 tag on every frame over its sequence number.
//! HMAC-SHA256 from RustCrypto (`hmac`, `sha2`): the field's standard construction, compared
//! in constant time by `verify_slice`.
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::wire::{KEY_ID_LEN, NONCE_LEN, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted (bytes): 256 bits.
pub const MIN_KEY_LEN: usize = 32;

/// The keys of the key file, first one signs: there always is one.
#[derive(Clone)]
pub struct Keys {
    signing: Vec<u8>,
    others: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.len())
    }
}

impl Keys {
    /// One hex key per line; `#` starts a comment; blank lines are skipped.
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let key = hex(line).ok_or_else(|| format!("line {}: not a hex key", i + 1))?;
            if key.len() < MIN_KEY_LEN {
                return Err(format!(
                    "line {}: a key of {} bytes; at least {MIN_KEY_LEN} (64 hex digits, e.g. \
                     from `openssl rand -hex 32`)",
                    i + 1,
                    key.len()
                ));
            }
            keys.push(key);
        }
        let mut keys = keys.into_iter();
        let Some(signing) = keys.next() else {
            return Err("no key in the file".into());
        };
        Ok(Keys {
            signing,
            others: keys.collect(),
        })
    }

    pub fn load(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading sync key file {}: {e}", path.display()))?;
        Keys::parse(&text).map_err(|e| format!("sync key file {}: {e}", path.display()))
    }

    pub fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// There always is a signing key; `is_empty` only satisfies the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The signing key's id, sent in the hello so the server picks the same key.
    pub fn signing_id(&self) -> [u8; KEY_ID_LEN] {
        key_id(&self.signing)
    }

    pub fn signing(&self) -> &[u8] {
        &self.signing
    }

    /// The key with this id, if the file lists it.
    pub fn by_id(&self, id: &[u8; KEY_ID_LEN]) -> Option<&[u8]> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .find(|k| key_id(k) == *id)
            .map(Vec::as_slice)
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// First bytes of SHA-256 of the key: names it without revealing it.
pub fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let mut id = [0u8; KEY_ID_LEN];
    for (i, d) in id.iter_mut().zip(Sha256::digest(key).iter()) {
        *i = *d;
    }
    id
}

/// One connection's key: HMAC(shared key, label | client nonce | server nonce | client id),
/// so frames of another connection, or claimed by another peer, never verify.
#[derive(Clone)]
pub struct Session {
    key: [u8; 32],
}

impl Session {
    pub fn derive(
        shared: &[u8],
        client_nonce: &[u8; NONCE_LEN],
        server_nonce: &[u8; NONCE_LEN],
        client_id: &str,
    ) -> Session {
        let mut m = mac(shared);
        m.update(b"pgrouter sync v1");
        m.update(client_nonce);
        m.update(server_nonce);
        m.update(client_id.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(&m.finalize().into_bytes());
        Session { key }
    }

    /// The tag of frame `seq`.
    pub fn tag(&self, seq: u64, kind: u8, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut m = mac(&self.key);
        m.update(&seq.to_be_bytes());
        m.update(&[kind]);
        m.update(payload);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&m.finalize().into_bytes());
        t
    }

    /// Constant-time check of frame `seq`'s tag.
    pub fn verify(&self, seq: u64, kind: u8, payload: &[u8], tag: &[u8]) -> bool {
        let mut m = mac(&self.key);
        m.update(&seq.to_be_bytes());
        m.update(&[kind]);
        m.update(payload);
        m.verify_slice(tag).is_ok()
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// A fresh random nonce (the OS's generator).
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const K2: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn the_first_key_signs_and_every_key_is_accepted() {
        let k = Keys::parse(&format!("# rotation\n{K2}\n\n{K1}  # old\n")).unwrap();
        assert_eq!(k.signing(), hex(K2).unwrap().as_slice());
        assert!(k.by_id(&key_id(&hex(K1).unwrap())).is_some());
        assert!(k.by_id(&[0; KEY_ID_LEN]).is_none());
    }

    #[test]
    fn short_odd_or_missing_keys_are_refused() {
        assert!(Keys::parse("abcd").unwrap_err().contains("at least 32"));
        assert!(Keys::parse("abc").unwrap_err().contains("not a hex key"));
        assert!(Keys::parse("zz").unwrap_err().contains("not a hex key"));
        assert!(Keys::parse("# nothing\n").unwrap_err().contains("no key"));
    }

    #[test]
    fn a_tag_verifies_only_for_its_key_sequence_and_bytes() {
        let (a, b) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let s = Session::derive(&hex(K1).unwrap(), &a, &b, "198.18.0.21:7800");
        let t = s.tag(3, 1, b"flows");
        assert!(s.verify(3, 1, b"flows", &t));
        assert!(!s.verify(4, 1, b"flows", &t), "another sequence number");
        assert!(!s.verify(3, 2, b"flows", &t), "another kind");
        assert!(!s.verify(3, 1, b"flowz", &t), "other bytes");
        let other_key = Session::derive(&hex(K2).unwrap(), &a, &b, "198.18.0.21:7800");
        assert!(!other_key.verify(3, 1, b"flows", &t));
        let other_conn = Session::derive(&hex(K1).unwrap(), &a, &a, "198.18.0.21:7800");
        assert!(!other_conn.verify(3, 1, b"flows", &t));
        let other_peer = Session::derive(&hex(K1).unwrap(), &a, &b, "198.18.0.99:7800");
        assert!(!other_peer.verify(3, 1, b"flows", &t));
    }
}
