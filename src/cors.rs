//! Cross-origin access for web pages that call the API from a browser (`server.cors_origins`,
//! off by default). A preflight (`OPTIONS` with `Access-Control-Request-Method`) for a client
//! API route (`Route::is_client_api`) from an address the IP rules allow is answered here,
//! without authentication, since browsers send no credential with one; every answer of such a
//! route to an allowed `Origin`, errors included, says the page may read it. No other route
//! ever gets either, and no answer allows credentials: the API takes a client token the page
//! holds itself, never a cookie. Owns no state; reads the config snapshot's list.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::body::{full, Body};
use crate::config::CorsOrigins;

/// What a page may read of an answer beyond the CORS-safelisted headers: the request id, the
/// retry hints the SDKs honour, and the resumable upload protocol's headers.
const EXPOSED: &str = "x-request-id, request-id, retry-after, x-should-retry, \
                       x-goog-upload-url, x-goog-upload-status, x-goog-upload-control-url, \
                       x-goog-upload-chunk-granularity, x-goog-upload-size-received";
/// Methods the client API routes take.
const METHODS: &str = "GET, POST, DELETE, PATCH";
/// How long a browser may keep a preflight's answer.
const MAX_AGE: &str = "600";

/// The `Access-Control-Allow-Origin` value for this request, when its `Origin` may call the API
/// (`*` for `["*"]`, else the origin itself); `None` when CORS is off or the origin is not listed.
pub fn allowed(origins: &CorsOrigins, headers: &HeaderMap) -> Option<HeaderValue> {
    // Off (the default) looks at no header.
    match origins {
        CorsOrigins::None => None,
        CorsOrigins::Any => headers
            .contains_key(header::ORIGIN)
            .then(|| HeaderValue::from_static("*")),
        // Sorted and normalised at load as browsers serialise origins (lowercase), so a long
        // list costs a binary search.
        CorsOrigins::Listed(list) => {
            let origin = headers.get(header::ORIGIN)?;
            let sent = origin.to_str().ok()?;
            list.binary_search_by(|o| o.as_str().cmp(sent))
                .is_ok()
                .then(|| origin.clone())
        }
    }
}

/// The method a preflight asks about, when the request is one.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

/// The answer to an allowed preflight: 204, the methods, and the headers it asked to send
/// (a client token's `Authorization` or `x-goog-api-key` among them). A public page calling a
/// proxy on this machine or the local network asks Chromium's private network question
/// (`Access-Control-Request-Private-Network`): a listed page is told yes.
pub fn preflight(allow_origin: HeaderValue, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(full(Vec::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    if request
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        headers.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    mark_with(
        headers,
        allow_origin,
        "origin, access-control-request-method, access-control-request-headers",
    );
    response
}

/// Lets the page that sent the request read this answer.
pub fn mark(headers: &mut HeaderMap, allow_origin: HeaderValue) {
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    mark_with(headers, allow_origin, "origin");
}

fn mark_with(headers: &mut HeaderMap, allow_origin: HeaderValue, vary: &'static str) {
    // An answer that names one origin differs by origin: caches must not hand it to another.
    if allow_origin != "*" {
        headers.append(header::VARY, HeaderValue::from_static(vary));
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("x")),
        );
        h
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let listed = CorsOrigins::Listed(vec!["https://app.example.com".into()]);
        let ok = with_origin("https://app.example.com");
        assert_eq!(
            allowed(&listed, &ok).as_ref().map(HeaderValue::as_bytes),
            Some(&b"https://app.example.com"[..])
        );
        assert!(allowed(&listed, &with_origin("https://evil.example.com")).is_none());
        assert!(allowed(&listed, &with_origin("null")).is_none());
        assert!(allowed(&listed, &HeaderMap::new()).is_none());
        assert!(allowed(&CorsOrigins::None, &ok).is_none());
        assert_eq!(
            allowed(&CorsOrigins::Any, &with_origin("null"))
                .as_ref()
                .map(HeaderValue::as_bytes),
            Some(&b"*"[..])
        );
    }

    #[test]
    fn a_preflight_is_an_options_request_naming_a_method() {
        let mut h = HeaderMap::new();
        assert_eq!(preflight_method(&Method::OPTIONS, &h), None);
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert_eq!(preflight_method(&Method::OPTIONS, &h), Some(Method::POST));
        assert_eq!(preflight_method(&Method::POST, &h), None);
    }
}
