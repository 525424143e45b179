//! Dashboard sessions: an admin logs in once with an admin token and gets a random session id
//! in an HttpOnly, SameSite=Strict cookie. The cookie never holds the token; the id is checked
//! against this server-side table (constant time), expires, and is forgotten at logout.
//!
//! The table is keyed by a hash of the id (`id_hash`), so the id itself is kept nowhere but in
//! the browser; with a shared store (`outbox`), other replicas learn a session by that hash.
//!
//! A session ends with its token: it remembers the fingerprint (a hash, never the token) of
//! the admin token that opened it, and is admitted only while the running config still has that
//! token, so a reload that removes the token ends the sessions it opened. A session opened with
//! no token (no admin tokens configured, a local caller) lasts only while that is still so.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::outbox::{Event, Outbox};
use crate::secret::Token;

/// The cookie's name.
pub const COOKIE: &str = "gr_session";
/// How long a login lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at most; the oldest go first.
const MAX_SESSIONS: usize = 1024;

/// What opened a session: an admin token (by its fingerprint), or nothing (the tokenless
/// loopback admin).
pub type OpenedBy = Option<[u8; 32]>;

struct Session {
    expires: Instant,
    opened_by: OpenedBy,
}

#[derive(Default)]
pub struct Sessions {
    /// By `id_hash` of the session id.
    inner: Mutex<HashMap<[u8; 32], Session>>,
    outbox: Outbox,
}

/// The hash a session is known by (in this table and in a shared store).
pub fn id_hash(id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"gemini-rotator session\0");
    h.update(id.as_bytes());
    h.finalize().into()
}

impl Sessions {
    /// A table whose sessions are also told to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Sessions {
            outbox,
            ..Sessions::default()
        }
    }

    /// A session another replica opened (by its id's hash), lasting `left`.
    pub fn insert_remote(&self, id_hash: [u8; 32], opened_by: OpenedBy, left: Duration) {
        let left = left.min(LIFETIME);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        Self::make_room(&mut inner, now);
        inner.insert(
            id_hash,
            Session {
                expires: now + left,
                opened_by,
            },
        );
    }

    /// Whether a session with this id hash is in the table (live or not).
    pub fn knows(&self, id_hash: &[u8; 32]) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.contains_key(id_hash)
    }

    /// A session another replica ended.
    pub fn remove_remote(&self, id_hash: &[u8; 32]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.remove(id_hash);
    }

    /// Drops expired sessions, then the oldest one if the table is full.
    fn make_room(inner: &mut HashMap<[u8; 32], Session>, now: Instant) {
        inner.retain(|_, s| s.expires > now);
        if inner.len() >= MAX_SESSIONS {
            if let Some(oldest) = inner.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                inner.remove(&oldest);
            }
        }
    }

    /// Starts a session opened by `opened_by`; returns its id (64 hex characters from the OS's
    /// random source).
    pub fn create(&self, opened_by: OpenedBy) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let hash = id_hash(&id);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        Self::make_room(&mut inner, now);
        inner.insert(
            hash,
            Session {
                expires: now + LIFETIME,
                opened_by,
            },
        );
        drop(inner);
        self.outbox.send(Event::SessionOpened {
            id_hash: hash,
            opened_by,
            left: LIFETIME,
        });
        Ok(id)
    }

    /// Whether the request carries a live session cookie whose opener still holds: its admin
    /// token is among `admin_tokens` (the running config's), or, for a session opened without
    /// one, there are still no admin tokens and the caller is `local`. A session whose opener
    /// is gone is forgotten.
    pub fn admits(&self, headers: &HeaderMap, admin_tokens: &[Token], local: bool) -> bool {
        let Some(presented) = session_cookie(headers) else {
            return false;
        };
        let presented = id_hash(presented);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Compare with every id, so the time taken does not depend on which one matched.
        let mut found: Option<(&[u8; 32], &Session)> = None;
        for (id, session) in inner.iter() {
            let same: bool = id.ct_eq(&presented).into();
            if same {
                found = Some((id, session));
            }
        }
        let Some((id, session)) = found else {
            return false;
        };
        if session.expires <= now {
            return false;
        }
        let holds = match &session.opened_by {
            Some(fingerprint) => {
                let mut held = false;
                for token in admin_tokens {
                    held |= bool::from(token.fingerprint().ct_eq(fingerprint));
                }
                held
            }
            None => admin_tokens.is_empty() && local,
        };
        // Its opener is gone for good: the token was removed, or (for a tokenless session)
        // admin tokens now exist. A tokenless session merely presented from elsewhere stays.
        if !holds && (session.opened_by.is_some() || !admin_tokens.is_empty()) {
            let id = *id;
            inner.remove(&id);
            tracing::info!("dashboard session ended: what opened it no longer admits it");
        }
        holds
    }

    /// Ends the session the request carries, if any.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(presented) = session_cookie(headers) {
            let hash = id_hash(presented);
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.remove(&hash);
            drop(inner);
            self.outbox.send(Event::SessionEnded { id_hash: hash });
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
        let admin = [Token::new("adm-0123456789abcdef-admin")];
        let sessions = Sessions::default();
        let id = sessions
            .create(Some(admin[0].fingerprint()))
            .unwrap_or_default();
        assert_eq!(id.len(), 64);
        let admits = |cookie: &str| sessions.admits(&with_cookie(cookie), &admin, false);
        assert!(admits(&format!("theme=dark; {COOKIE}={id}")));
        assert!(!admits(&format!("{COOKIE}={}", "0".repeat(64))));
        assert!(!admits("theme=dark"));
        sessions.end(&with_cookie(&format!("{COOKIE}={id}")));
        assert!(!admits(&format!("{COOKIE}={id}")));
    }

    #[test]
    fn a_session_ends_with_its_token() {
        let (a, b) = (
            Token::new("adm-aaaaaaaaaaaaaaaa-admin"),
            Token::new("adm-bbbbbbbbbbbbbbbb-admin"),
        );
        let sessions = Sessions::default();
        let id = sessions.create(Some(a.fingerprint())).unwrap_or_default();
        let cookie = with_cookie(&format!("{COOKIE}={id}"));
        assert!(sessions.admits(&cookie, &[a.clone(), b.clone()], false));
        // The reload removed `a`: the session is over, and stays over if `a` comes back.
        assert!(!sessions.admits(&cookie, std::slice::from_ref(&b), false));
        assert!(!sessions.admits(&cookie, &[a, b], false));

        // A session opened without a token, by a local caller, while no admin token existed.
        let tokenless = sessions.create(None).unwrap_or_default();
        let cookie = with_cookie(&format!("{COOKIE}={tokenless}"));
        assert!(sessions.admits(&cookie, &[], true));
        assert!(!sessions.admits(&cookie, &[], false), "not local");
        let now_set = [Token::new("adm-cccccccccccccccc-admin")];
        assert!(
            !sessions.admits(&cookie, &now_set, true),
            "admin tokens now"
        );
    }
}
