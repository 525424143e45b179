//! Dashboard sessions: an admin logs in once with an admin token and gets a random session id
//! in an HttpOnly, SameSite=Strict cookie. The cookie never holds the token; the id is checked
//! against this server-side table (constant time), expires, and is forgotten at logout.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "gr_session";
/// How long a login lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at most; the oldest go first.
const MAX_SESSIONS: usize = 1024;

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Starts a session; returns its id (64 hex characters from the OS's random source).
    pub fn create(&self) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        inner.retain(|_, expires| *expires > now);
        if inner.len() >= MAX_SESSIONS {
            if let Some(oldest) = inner
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(k, _)| k.clone())
            {
                inner.remove(&oldest);
            }
        }
        inner.insert(id.clone(), now + LIFETIME);
        Ok(id)
    }

    /// Whether the request carries a live session cookie.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = session_cookie(headers) else {
            return false;
        };
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut ok = false;
        for (id, expires) in inner.iter() {
            let same: bool = id.as_bytes().ct_eq(presented.as_bytes()).into();
            ok |= same && *expires > now;
        }
        ok
    }

    /// Ends the session the request carries, if any.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(presented) = session_cookie(headers) {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.remove(presented);
        }
    }
}

/// The session id from the `Cookie` header(s).
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The `Set-Cookie` value for a new session; `Secure` when the browser came over HTTPS (so
/// the cookie never travels in clear), never on plain HTTP (the browser would drop it).
pub fn set_cookie(id: &str, https: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        secure(https)
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(https: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(https)
    )
}

fn secure(https: bool) -> &'static str {
    if https {
        "; Secure"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = value.parse() {
            h.insert(http::header::COOKIE, v);
        }
        h
    }

    #[test]
    fn sessions_admit_only_their_own_id_until_logout() {
        let sessions = Sessions::default();
        let id = sessions.create().unwrap_or_default();
        assert_eq!(id.len(), 64);
        assert!(sessions.admits(&with_cookie(&format!("theme=dark; {COOKIE}={id}"))));
        assert!(!sessions.admits(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64)))));
        assert!(!sessions.admits(&with_cookie("theme=dark")));
        sessions.end(&with_cookie(&format!("{COOKIE}={id}")));
        assert!(!sessions.admits(&with_cookie(&format!("{COOKIE}={id}"))));
    }
}
