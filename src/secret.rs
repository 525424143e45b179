//! Secrets that must never be printed: Gemini API keys and client/admin tokens.
//!
//! Both types mask themselves in `Debug` and `Display`, showing at most four characters of the
//! secret (a key's public format prefix `AIza`/`AQ.` is not secret); the raw value is reachable
//! only through `expose()`, which is called where the upstream header is built and where a
//! presented token is compared. Nothing else should call it.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use subtle::ConstantTimeEq;

/// The public prefixes of Google's two key formats: they tell every key apart from nothing.
const KEY_PREFIXES: [&str; 2] = ["AIza", "AQ."];

/// Masks a Gemini key as `AIza****abcd`: its format prefix (the same for every key) and its last
/// four characters, the only part of the secret shown. Short values are fully hidden.
pub fn mask_key(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let head = KEY_PREFIXES
        .iter()
        .find(|p| raw.starts_with(*p))
        .copied()
        .unwrap_or("");
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Tokens at least this long show their first four characters in the masked form.
const SHOWN_FROM: usize = 16;

/// Masks a client or admin token as its first four characters and a short id from its hash
/// (`sk-l…#3fa9c2`), so two tokens that share a prefix still read apart; a token shorter than
/// 16 characters shows none of its characters (`…#3fa9c2`).
pub fn mask_token(raw: &str) -> String {
    let id: String = fingerprint(raw)[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < SHOWN_FROM {
        return format!("…#{id}");
    }
    let head: String = chars[..4].iter().collect();
    format!("{head}…#{id}")
}

/// SHA-256 of a token under a fixed label: an identity that can be kept and compared (a
/// dashboard session remembers the admin token that opened it this way) without the token.
fn fingerprint(raw: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"gemini-rotator token fingerprint\0");
    hasher.update(raw.as_bytes());
    hasher.finalize().into()
}

/// A Gemini API key, with what every request needs of it made once, at load: its masked form
/// (for the log line) and its upstream header value. Equality and hashing use the raw value:
/// the key *is* its identity.
#[derive(Clone)]
pub struct ApiKey {
    raw: Arc<str>,
    masked: Arc<str>,
    /// Marked sensitive (never indexed by HTTP/2 header compression); `None` if the key has
    /// characters a header cannot carry.
    header: Option<HeaderValue>,
}

impl ApiKey {
    pub fn new(raw: impl Into<Arc<str>>) -> Self {
        let raw = raw.into();
        let masked = mask_key(&raw).into();
        let header = HeaderValue::from_str(&raw).ok().map(|mut value| {
            value.set_sensitive(true);
            value
        });
        ApiKey {
            raw,
            masked,
            header,
        }
    }

    /// The raw key, for comparing keys (a reload's diff) and tests; requests send `header`.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The upstream `x-goog-api-key` value; `None` for a key no header can carry.
    pub fn header(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }

    /// `AIza****abcd`; cloning the `Arc` costs no allocation.
    pub fn masked(&self) -> &Arc<str> {
        &self.masked
    }

    /// True for both Google key formats (`AIza…`, `AQ.…`).
    pub fn looks_valid(&self) -> bool {
        self.raw.starts_with("AIza") || self.raw.starts_with("AQ.")
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for ApiKey {}

impl std::hash::Hash for ApiKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.masked)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

/// A client or admin bearer token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(Arc<str>);

impl Token {
    pub fn new(raw: impl Into<Arc<str>>) -> Self {
        Token(raw.into())
    }

    /// The raw token. Only for comparing with what a client presented.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_token(&self.0)
    }

    /// The token's fingerprint (a hash, see `fingerprint`), to remember it without keeping it.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.0)
    }

    /// Constant-time comparison with a presented credential.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.masked())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_mask_in_every_format() {
        let k = ApiKey::new("AIzaFAKE-test-key-000000000000000000wxyz");
        assert_eq!(k.to_string(), "AIza****wxyz");
        assert_eq!(format!("{k:?}"), "ApiKey(AIza****wxyz)");
        assert_eq!(mask_key("short"), "****");
        // At most four characters of the secret, whatever the format.
        assert_eq!(mask_key("AQ.Ab8RN6-test-key-0000000000wxyz"), "AQ.****wxyz");
        assert_eq!(mask_key("sk-not-a-gemini-key-000000"), "****0000");
    }

    #[test]
    fn tokens_mask_and_compare() {
        let t = Token::new("sk-local-change-me");
        let shown = t.to_string();
        assert!(shown.starts_with("sk-l…#"), "{shown}");
        assert_eq!(
            shown.chars().count(),
            "sk-l…#".chars().count() + 6,
            "{shown}"
        );
        assert_eq!(format!("{t:?}"), format!("Token({shown})"));
        // Tokens with the same first characters still read apart.
        assert_ne!(Token::new("sk-local-change-mf").to_string(), shown);
        // A short token shows none of its characters.
        assert!(!mask_token("sk-short-1").contains("sk"));
        assert!(mask_token("sk-short-1").starts_with("…#"));
        assert_eq!(
            t.fingerprint(),
            Token::new("sk-local-change-me").fingerprint()
        );
        assert_ne!(
            t.fingerprint(),
            Token::new("sk-local-change-mf").fingerprint()
        );
        assert!(t.matches(b"sk-local-change-me"));
        assert!(!t.matches(b"sk-local-change-mf"));
        assert!(!t.matches(b"sk-local"));
    }
}

/// A Redis URL, which may carry a password (`redis://user:password@host`): shown with its
/// credentials replaced by `****` (`redis://****@host:6379/0`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Arc<str>);

impl RedisUrl {
    pub fn new(raw: impl Into<Arc<str>>) -> Self {
        RedisUrl(raw.into())
    }

    /// The raw URL. Only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its credentials.
    pub fn masked(&self) -> String {
        let raw = &*self.0;
        let Some((scheme, rest)) = raw.split_once("://") else {
            return "****".to_string();
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://****{}", &rest[at..]),
            None => raw.to_string(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.masked())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod redis_url_tests {
    use super::RedisUrl;

    #[test]
    fn credentials_never_show() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:FAKE-PASS@10.0.0.1:6379",
                "redis://****@10.0.0.1:6379",
            ),
            (
                "rediss://user:FAKE-PASS@cache.example:6380/2",
                "rediss://****@cache.example:6380/2",
            ),
            ("redis://user:FA@KE@host/1?x=@", "redis://****@host/1?x=@"),
            ("FAKE-PASS", "****"),
        ];
        for (raw, shown) in cases {
            let url = RedisUrl::new(raw);
            assert_eq!(url.masked(), shown);
            assert!(!format!("{url:?} {url}").contains("FAKE-PASS"), "{raw}");
        }
    }
}
