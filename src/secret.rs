//! Secrets that must never be printed: Gemini API keys and client/admin tokens.
//!
//! Both types mask themselves in `Debug` and `Display`; the raw value is reachable only through
//! `expose()`, which is called where the upstream header is built and where a presented token is
//! compared. Nothing else should call it.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use subtle::ConstantTimeEq;

/// Masks a Gemini key as `AIza****abcd` (first four, last four). Short values are fully hidden.
pub fn mask_key(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Masks a client token as its first eight characters followed by `…` (SPEC §7).
pub fn mask_token(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() <= 8 {
        return "****".to_string();
    }
    let head: String = chars[..8].iter().collect();
    format!("{head}…")
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
    }

    #[test]
    fn tokens_mask_and_compare() {
        let t = Token::new("sk-local-change-me");
        assert_eq!(t.to_string(), "sk-local…");
        assert!(t.matches(b"sk-local-change-me"));
        assert!(!t.matches(b"sk-local-change-mf"));
        assert!(!t.matches(b"sk-local"));
    }
}
