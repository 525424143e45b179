//! The dashboard: one self-contained page for operators (HTML, CSS and JS embedded in the
//! binary, no CDN, no build step), its login and logout, and the cross-site rule for requests
//! authenticated by its session cookie.
//!
//! `GET /dashboard` shows the login form until the browser holds a live session, then the page.
//! `POST /dashboard/login` takes an admin token from the form, checks it in constant time
//! against every configured admin token, and answers with a cookie holding only a random
//! server-side session id (`sessions`), never the token. The page polls
//! `GET /dashboard/api/state` (admin gate, built in `state`) and calls the ordinary admin
//! endpoints for resets and reloads, sending `x-dashboard: 1`: a state-changing request that
//! is authenticated by the cookie alone and lacks that header is refused (`same_site`), on top
//! of the cookie's `SameSite=Strict`.

mod state;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access;
use crate::body::json_response;
use crate::body::{full, read_body, Body};
use crate::error::ProxyError;
use crate::sessions;
use crate::state::{App, Snapshot};

pub use state::state;

/// The header the page sends with every request that changes state. Browsers do not let a
/// cross-site form send it, and a cross-site script would need a CORS preflight we never allow.
pub const CSRF_HEADER: &str = "x-dashboard";

const PAGE: &str = include_str!("assets/dashboard.html");
const LOGIN: &str = include_str!("assets/login.html");
const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// Login forms are tiny; anything bigger is not one.
const MAX_LOGIN_BODY: u64 = 4096;

/// Scripts and styles only from this origin (no inline code), no framing, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether a request authenticated by the session cookie may act: reads always, changes only
/// with `x-dashboard: 1`.
pub fn same_site(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        || headers
            .get(CSRF_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1")
}

/// `GET /dashboard` (the page, or the login form without a session) and its assets.
pub async fn page(
    app: &Arc<App>,
    snap: &Snapshot,
    caller: &access::Caller,
    asset: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ProxyError> {
    let admin_tokens = &snap.config.auth.admin_tokens;
    match asset {
        "" if app
            .admits_session(headers, admin_tokens, caller.local)
            .await =>
        {
            Ok(html(StatusCode::OK, PAGE.to_string()))
        }
        "" => Ok(login_page(StatusCode::OK, None)),
        "dashboard.css" => Ok(asset_response(CSS, "text/css; charset=utf-8")),
        "dashboard.js" => Ok(asset_response(JS, "text/javascript; charset=utf-8")),
        _ => Err(ProxyError::not_found("no such dashboard file")),
    }
}

/// `POST /dashboard/login` with a form field `token`: a session cookie and a redirect to the
/// page, or the login form again with a 401. With no admin tokens configured, a local client
/// (`access::Origin::local`: loopback TCP peer, loopback `Host`, not forwarded) may log in
/// without one, as the admin gate lets it in anyway. The session remembers which admin token
/// opened it (by fingerprint), and ends when a reload removes that token.
pub async fn login(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &access::Caller,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let ip = caller.ip;
    let limit = snap.config.access.max_token_failures;
    if let Some(wait) = app.lockout.wait(ip, caller.loopback_peer, limit) {
        return Ok(refused(&ProxyError::LockedOut { retry_after: wait }, None));
    }
    let body = read_body(req, MAX_LOGIN_BODY.min(snap.config.server.max_body)).await?;
    let form = String::from_utf8_lossy(&body);
    let presented = access::query_param(form.trim(), "token").unwrap_or_default();
    let presented = presented.trim();

    let admin_tokens = &snap.config.auth.admin_tokens;
    // Look at every token so the time taken does not depend on which one matched.
    let mut opened_by = None;
    for token in admin_tokens {
        if token.matches(presented.as_bytes()) {
            opened_by = Some(token.fingerprint());
        }
    }
    let ok = if admin_tokens.is_empty() {
        caller.local
    } else {
        opened_by.is_some()
    };
    if !ok {
        app.lockout.failed(ip, caller.loopback_peer, limit);
        tracing::info!(%ip, "dashboard login refused");
        let message = if admin_tokens.is_empty() {
            "No admin tokens are configured: only this machine, at a localhost address, can log in."
        } else {
            "That is not an admin token."
        };
        return Ok(refused(&ProxyError::Unauthorized, Some(message)));
    }
    let id = app
        .sessions
        .create(opened_by)
        .map_err(ProxyError::Internal)?;
    tracing::info!(%ip, "dashboard login");
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let cookie = HeaderValue::from_str(&sessions::set_cookie(&id, caller.https))
        .map_err(|e| ProxyError::Internal(format!("session cookie: {e}")))?;
    headers.insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `POST /dashboard/logout`: forgets the session and clears the cookie.
pub fn logout(app: &Arc<App>, headers: &HeaderMap, https: bool) -> Response<Body> {
    app.sessions.end(headers);
    let mut response = json_response(StatusCode::OK, &serde_json::json!({"ok": true}));
    if let Ok(clear) = HeaderValue::from_str(&sessions::clear_cookie(https)) {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
}

/// The login form again, showing why the login was refused: status and headers (such as
/// `Retry-After`) are the error's, decided in `error` like every other refusal; the page says
/// `message`, or the error's own message.
fn refused(error: &ProxyError, message: Option<&str>) -> Response<Body> {
    let text = message.map_or_else(|| error.client_message(), str::to_string);
    let mut page = login_page(error.status(), Some(&text));
    error.add_headers(page.headers_mut());
    page
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response<Body> {
    let error = error
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    html(status, LOGIN.replace("<!--error-->", &error))
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn asset_response(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate each time: a new binary must not run yesterday's script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_requests_change_state_only_with_the_header() {
        let mut with = HeaderMap::new();
        with.insert(CSRF_HEADER, HeaderValue::from_static("1"));
        let mut wrong = HeaderMap::new();
        wrong.insert(CSRF_HEADER, HeaderValue::from_static("yes"));
        let none = HeaderMap::new();
        assert!(same_site(&Method::GET, &none));
        assert!(same_site(&Method::HEAD, &none));
        assert!(same_site(&Method::POST, &with));
        assert!(!same_site(&Method::POST, &none));
        assert!(!same_site(&Method::POST, &wrong));
    }

    #[test]
    fn assets_are_self_contained() {
        for (name, text) in [("page", PAGE), ("login", LOGIN), ("css", CSS), ("js", JS)] {
            // Nothing fetched from elsewhere, no inline code or styles (the CSP forbids them).
            for outside in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "<script>",
                "style=\"",
            ] {
                assert!(!text.contains(outside), "{name} contains {outside:?}");
            }
        }
        assert!(LOGIN.contains("<!--error-->"));
    }
}
