//! `/v1beta/models…`: the native Gemini API, passed through. Body bytes go upstream untouched;
//! only the credential changes (the client's token out, a pool key in) and the same rotation,
//! failover and health accounting apply. Errors are Google-shaped.
//!
//! What goes upstream is checked first: a body must be a UTF-8 JSON object (a syntax check,
//! no tree is built), and the query keeps only Google's documented parameters for these
//! methods (`FORWARDED_PARAMS`; `alt` only as `json` or `sse`), decoded and re-encoded; a
//! credential (`key`, `access_token`…) or any other parameter never travels. Whether a stream is SSE is read
//! from the upstream's `Content-Type`, never from how the client spelled `alt`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::{allowed_chain, chain_exhausted, clean_model_name, next_in_chain, resolve};
use crate::body::{full, read_body, Reply};
use crate::error::ProxyError;
use crate::proxy::{self, Call, Delivery, Payload};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::router::{GeminiAction, Route};
use crate::state::{App, Snapshot};

pub async fn passthrough(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    route: Route,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let query = forwarded_query(req.uri().query())?;
    match route {
        Route::GeminiListModels => {
            let path = with_query("/v1beta/models".to_string(), &query);
            buffered(snap, None, Method::GET, &path, None, log).await
        }
        Route::GeminiGetModel(id) => {
            let model = clean_model_name(&id)?;
            if snap.config.models.alias(model).is_none() {
                caller.check_model(model)?;
                let path = with_query(format!("/v1beta/models/{model}"), &query);
                return buffered(snap, None, Method::GET, &path, None, log).await;
            }
            // An alias is its first model as Google describes it, under the alias's name.
            let chain = allowed_chain(caller, model, resolve(&snap.config.models, model))?;
            let target = chain
                .first()
                .ok_or_else(|| ProxyError::Internal("empty model chain".into()))?;
            let path = with_query(format!("/v1beta/models/{}", target.model), &query);
            let (bytes, content_type) = whole(snap, None, Method::GET, &path, None, log).await?;
            let renamed = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(mut object)) => {
                    object.insert("name".into(), format!("models/{model}").into());
                    Bytes::from(serde_json::Value::Object(object).to_string())
                }
                _ => bytes,
            };
            Ok(Reply::Done(respond(renamed, content_type)))
        }
        Route::GeminiCall {
            model,
            action,
            alpha,
        } => {
            let requested = clean_model_name(&model)?.to_string();
            log.model = Some(requested.clone());
            let chain =
                allowed_chain(caller, &requested, resolve(&snap.config.models, &requested))?;
            let body = read_body(req, snap.config.server.max_body).await?;
            check_json_object(&body)?;
            // A file or cache the body names lives on the key that created it (issue #18).
            let owner = caller.token_name.as_deref().unwrap_or("");
            let named = crate::api::native::referenced(&body)?;
            let pin =
                crate::api::native::resolve(app, snap, owner, &named, std::time::SystemTime::now())
                    .await?;
            let streaming = action == GeminiAction::StreamGenerateContent;
            let mut last_error = None;
            for (i, target) in chain.iter().enumerate() {
                let version = if alpha { "v1alpha" } else { "v1beta" };
                let path = call_path(version, &target.model, action.as_str(), &query);
                let call = Call {
                    model: Some(&target.model),
                    method: Method::POST,
                    path_and_query: &path,
                    body: Some(body.clone()),
                    delivery: if streaming {
                        Delivery::Streaming
                    } else {
                        Delivery::Buffered
                    },
                    pinned: pin.as_ref().map(|(resource, index)| proxy::Pinned {
                        index: *index,
                        resource,
                    }),
                    native: None,
                };
                match proxy::execute(snap, call, log).await {
                    Ok(served) => {
                        let content_type = served
                            .content_type
                            .clone()
                            .unwrap_or(HeaderValue::from_static("application/json"));
                        return Ok(match served.body {
                            Payload::Full(bytes) => Reply::Done(respond(bytes, content_type)),
                            Payload::Stream(response) => Reply::Streaming(
                                relay::start(
                                    app.clone(),
                                    snap.clone(),
                                    served.lease,
                                    response,
                                    Shape::Passthrough {
                                        sse: is_event_stream(&content_type),
                                    },
                                    log.hand_off(),
                                    content_type,
                                )
                                .await,
                            ),
                        });
                    }
                    Err(e) => last_error = Some(next_in_chain(&chain, i, e)?),
                }
            }
            Err(chain_exhausted(last_error))
        }
        _ => Err(ProxyError::not_found("unknown path")),
    }
}

async fn buffered(
    snap: &Snapshot,
    model: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let (bytes, content_type) = whole(snap, model, method, path, body, log).await?;
    Ok(Reply::Done(respond(bytes, content_type)))
}

/// One buffered call through the pool: the answer's bytes and content type.
async fn whole(
    snap: &Snapshot,
    model: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    log: &mut RequestLog,
) -> Result<(Bytes, HeaderValue), ProxyError> {
    let call = Call {
        model,
        method,
        path_and_query: path,
        body,
        delivery: Delivery::Buffered,
        pinned: None,
        native: None,
    };
    let served = proxy::execute(snap, call, log).await?;
    let content_type = served
        .content_type
        .unwrap_or(HeaderValue::from_static("application/json"));
    match served.body {
        Payload::Full(bytes) => Ok((bytes, content_type)),
        Payload::Stream(_) => Err(ProxyError::Internal("expected a buffered body".into())),
    }
}

pub(crate) fn respond(bytes: Bytes, content_type: HeaderValue) -> Response<crate::body::Body> {
    let mut response = Response::new(full(bytes));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// Google's documented query parameters for the models methods, by the name sent upstream:
/// the system parameters `alt` (`$alt`), `fields` (`$fields`) and `prettyPrint`
/// (`$prettyPrint`), and `models.list`'s `pageSize` and `pageToken`. Everything else is
/// dropped: credentials (`key`, `$key`, `access_token`, `oauth_token`…), and the system
/// parameters that would change what this proxy reads or who pays (`$.xgafv`, `callback`,
/// `$ct`, `$httpMethod`, `userProject`, `quotaUser`…).
const FORWARDED_PARAMS: [&str; 5] = ["alt", "fields", "prettyPrint", "pageSize", "pageToken"];

/// The client's query as it may travel upstream: only `FORWARDED_PARAMS` (a `$` spelling
/// becomes the plain name), each name once (the first wins), values percent-decoded (`+` is a
/// space, as Google reads it) and re-encoded. `alt` may only ask for JSON or SSE: `media` and
/// `proto` answers are nothing these methods give, and a protobuf body is one this proxy
/// could not read (its errors, usage, stream events).
fn forwarded_query(query: Option<&str>) -> Result<String, ProxyError> {
    filter_query(query, &FORWARDED_PARAMS, &["sse", "json"])
}

/// Google's documented query parameters of the other native methods (files, caches, batches,
/// operations, uploads): the system parameters, paging, `filter`, `updateMask` (a cache's
/// patch), `force` (deleting a store with its documents), the upload protocol's
/// `uploadType`, and an interaction's `stream`, `last_event_id` (resuming its stream after
/// that event) and `include_input`. `alt` may also be `media` (a file's bytes).
pub(crate) const NATIVE_PARAMS: [&str; 12] = [
    "alt",
    "fields",
    "prettyPrint",
    "pageSize",
    "pageToken",
    "filter",
    "updateMask",
    "force",
    "uploadType",
    "stream",
    "last_event_id",
    "include_input",
];

/// `forwarded_query` for the other native methods (`NATIVE_PARAMS`).
pub(crate) fn native_query(query: Option<&str>) -> Result<String, ProxyError> {
    filter_query(query, &NATIVE_PARAMS, &["sse", "json", "media"])
}

/// The query keeping only `allowed` names (a `$` spelling becomes the plain name), each once
/// (the first wins), values decoded and re-encoded; `alt` only as one of `alts`.
fn filter_query(
    query: Option<&str>,
    allowed: &[&str],
    alts: &[&str],
) -> Result<String, ProxyError> {
    let mut out = String::new();
    let mut sent = vec![false; allowed.len()];
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        };
        let name = percent_decode(name);
        let name = name.strip_prefix(b"$").unwrap_or(&name);
        let Some(i) = allowed.iter().position(|p| p.as_bytes() == name) else {
            continue;
        };
        if std::mem::replace(&mut sent[i], true) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(allowed[i]);
        let value = value.map(percent_decode);
        let wanted = |v: &[u8]| alts.iter().any(|a| v.eq_ignore_ascii_case(a.as_bytes()));
        if allowed[i] == "alt" && !value.as_deref().is_some_and(wanted) {
            return Err(ProxyError::BadRequest {
                message: format!(
                    "alt={} is not supported here: send alt={}",
                    crate::excerpt::excerpt(&String::from_utf8_lossy(
                        value.as_deref().unwrap_or_default()
                    )),
                    alts.join(" or alt=")
                ),
                param: Some("alt".into()),
            });
        }
        if let Some(value) = value {
            out.push('=');
            percent_encode(&value, &mut out);
        }
    }
    Ok(out)
}

/// `%XX` escapes and `+` (a space) decoded; a `%` not followed by two hex digits stays itself.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
        match bytes[i] {
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    // Two hex digits make at most 0xFF.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Appends `bytes` with everything but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Refuses, before any key is used, a body Google could only refuse: not UTF-8, not JSON, or
/// not an object. A syntax check: no tree is kept, and the bytes forwarded are the client's.
/// simd-json answers a body that passes (`json_syntax`); serde_json words a refusal and has
/// the last word, so a refusal reads as it always did.
pub(crate) fn check_json_object(body: &[u8]) -> Result<(), ProxyError> {
    if crate::json_syntax::is_object(body) {
        return Ok(());
    }
    serde_check_json_object(body)
}

fn serde_check_json_object(body: &[u8]) -> Result<(), ProxyError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ProxyError::bad_request(format!(
            "the request body is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
        ProxyError::bad_request(format!(
            "the request body is not valid JSON: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(ProxyError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(())
}

/// Whether an upstream answer is a server-sent event stream (`text/event-stream`, any
/// parameters, any case).
pub(crate) fn is_event_stream(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// `/v1beta/models/{model}:{action}` and the query, built in one allocation (on every call:
/// `format!` twice cost about 1.5k instructions).
fn call_path(version: &str, model: &str, action: &str, query: &str) -> String {
    let mut path = String::with_capacity(18 + model.len() + action.len() + query.len());
    path.push('/');
    path.push_str(version);
    path.push_str("/models/");
    path.push_str(model);
    path.push(':');
    path.push_str(action);
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    path
}

pub(crate) fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, expected: &str) {
        assert_eq!(
            forwarded_query(Some(query)).ok().as_deref(),
            Some(expected),
            "{query}"
        );
    }

    #[test]
    fn only_documented_parameters_travel_upstream() {
        assert_eq!(forwarded_query(None).ok().as_deref(), Some(""));
        check("", "");
        check("alt=sse", "alt=sse");
        check("pageSize=5&pageToken=abc", "pageSize=5&pageToken=abc");
        check(
            "fields=candidates&prettyPrint=false",
            "fields=candidates&prettyPrint=false",
        );
        // Credentials, however spelled, never travel.
        check("alt=sse&key=sk-secret", "alt=sse");
        check("key=sk-secret", "");
        check("$key=sk&%24key=sk&%6Bey=sk&KEY=sk", "");
        check(
            "access_token=t&oauth_token=t&$oauth_token=t&$access_token=t",
            "",
        );
        // Neither do unknown or unwanted system parameters.
        check(
            "callback=f&$callback=f&$.xgafv=1&userProject=p&quotaUser=u",
            "",
        );
        check(
            "$httpMethod=DELETE&$ct=text/plain&foo=bar&prettyPrint",
            "prettyPrint",
        );
        // `$` spellings and encoded names are Google's too, sent plain.
        check("$alt=sse", "alt=sse");
        check("%24alt=sse", "alt=sse");
        check("$fields=a&$prettyPrint=true", "fields=a&prettyPrint=true");
        // One of each: the first wins.
        check("alt=sse&$alt=json&alt=media", "alt=sse");
        // The other native methods may ask for a file's bytes and use the upload protocol.
        assert_eq!(
            native_query(Some("alt=media&uploadType=resumable&key=k&updateMask=ttl")).ok(),
            Some("alt=media&uploadType=resumable&updateMask=ttl".to_string())
        );
        assert!(native_query(Some("alt=proto")).is_err());
        assert_eq!(
            native_query(Some("access_token=t&$key=k&pageSize=3")).ok(),
            Some("pageSize=3".to_string())
        );
        // An interaction's stream is resumed after an event.
        assert_eq!(
            native_query(Some(
                "stream=true&last_event_id=ev%2D7&key=k&include_input=false"
            ))
            .ok(),
            Some("stream=true&last_event_id=ev-7&include_input=false".to_string())
        );
        // Values are decoded and re-encoded; nothing can smuggle a second parameter in.
        check("pageToken=a%26key%3Dx", "pageToken=a%26key%3Dx");
        check("pageToken=a+b%2Bc", "pageToken=a%20b%2Bc");
        check(
            "fields=candidates(content,finishReason)",
            "fields=candidates%28content%2CfinishReason%29",
        );
        check("pageToken=%zz%4", "pageToken=%25zz%254");
        check("pageToken=%E2%9C%93", "pageToken=%E2%9C%93");
        check("&&pageSize=1&", "pageSize=1");
        // `alt` asks for JSON or SSE, in any case; anything else is refused.
        check("alt=SSE&alt=proto", "alt=SSE");
        check("%24alt=Json", "alt=Json");
        for refused in [
            "alt=proto",
            "$alt=media",
            "alt=",
            "alt=sse%00",
            "key=k&alt=x",
        ] {
            assert!(
                matches!(
                    forwarded_query(Some(refused)),
                    Err(ProxyError::BadRequest { .. })
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn bodies_must_be_utf8_json_objects() {
        assert!(check_json_object(br#"{"contents": []}"#).is_ok());
        assert!(check_json_object(b" \n{}\n").is_ok());
        assert!(check_json_object(b"{\"text\": \"\xc3\xa9\"}").is_ok());
        for bad in [
            &b""[..],
            b"not json",
            b"{\"contents\": [}",
            b"{} {}",
            b"[]",
            b"\"text\"",
            b"{\"text\": \"\xff\"}",
            b"\xef\xbb\xbf{}",
        ] {
            let err = check_json_object(bad).err();
            assert!(
                matches!(err, Some(ProxyError::BadRequest { .. })),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The fast check must never pass a body serde_json refuses (serde_json is the reference);
    /// on these bodies they also agree the other way. Each is checked as the whole body and
    /// inside a large one.
    #[test]
    fn the_fast_check_agrees_with_serde_json() {
        let cases: &[&[u8]] = &[
            br#"{"a": [1, -2.5e3, 0, true, false, null, "x\n\u00e9\ud83d\ude00"]}"#,
            br#"{"a": 01}"#,
            br#"{"a": 1.}"#,
            br#"{"a": -}"#,
            br#"{"a": 1e}"#,
            br#"{"a": tru}"#,
            br#"{"a": NaN}"#,
            br#"{"a": "\x"}"#,
            br#"{"a": "\u00"}"#,
            br#"{"a": "\u00zz"}"#,
            b"{\"a\": \"tab\there\"}",
            b"{\"a\": \"nul\x00\"}",
            b"{\"a\": 1}\x0c",
            b"{\"a\": 1}\x00",
            br#"{"a": 1,}"#,
            br#"{"a" 1}"#,
            br#"{"a": [1 2]}"#,
            br#"{"a": {"b": }}"#,
            br#"{"a": "unterminated}"#,
            br#"{"a": 1} x"#,
            br#"{"a": "\/"}"#,
            b"{\"\xc3\xa9\": \"\xe2\x82\xac\"}",
            b"{\"a\": \"\xc3\"}",
            b"{\"a\": \"\xed\xa0\x80\"}",
            b" \t\r\n{} \t\r\n",
            b"{}{}",
        ];
        let padding = format!("\"pad\": \"{}\", ", "lorem ipsum\\n".repeat(6000));
        for &case in cases {
            let large = [
                b"{".as_slice(),
                padding.as_bytes(),
                b"\"case\": [",
                case,
                b"]}",
            ]
            .concat();
            for body in [case, large.as_slice()] {
                let serde = serde_check_json_object(body).is_ok();
                let fast = crate::json_syntax::is_object(body);
                assert_eq!(fast, serde, "{:?}", String::from_utf8_lossy(case));
                assert_eq!(check_json_object(body).is_ok(), serde);
            }
        }
        // What serde_json's walk lets through (a number beyond f64, a lone surrogate escape)
        // passes.
        for lax in [
            &br#"{"a": 1e999}"#[..],
            br#"{"a": "\ud800"}"#,
            br#"{"a": "\udc00x"}"#,
        ] {
            assert!(
                check_json_object(lax).is_ok(),
                "{:?}",
                String::from_utf8_lossy(lax)
            );
        }
        // Nesting far deeper than any request: refused by one or both, never a crash.
        let deep = [b"{\"a\":".repeat(5000), b"1".to_vec(), b"}".repeat(5000)].concat();
        let _ = check_json_object(&deep);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Random edits of a request body (bytes replaced, removed or inserted, JSON's own
        /// characters most often): what the fast check passes, serde_json passes.
        #[test]
        fn the_fast_check_agrees_with_serde_json_on_edited_bodies(
            edits in proptest::collection::vec(
                (
                    0usize..400,
                    proptest::prop_oneof![
                        proptest::sample::select(b"{}[]\",:\\ \n0123456789-+.eEtrufalsnxbf/\x00\x1f\xc3\xa9".to_vec()),
                        proptest::prelude::any::<u8>(),
                    ],
                    0u8..3,
                ),
                1..4,
            ),
        ) {
            let mut body = br#"{"contents": [{"role": "user", "parts": [{"text": "hi\n\"there\" \u00e9 \\ \/"}]}], "generationConfig": {"temperature": 0.5, "topP": -1.5e-3, "maxOutputTokens": 100, "stop": [null, true, false, []], "x": {}}}"#.to_vec();
            for (at, byte, op) in edits {
                let at = at % (body.len() + 1);
                match op {
                    0 if at < body.len() => body[at] = byte,
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.insert(at, byte),
                }
            }
            // serde_json may pass more (a lone surrogate escape, a number past f64, which
            // simd-json refuses and serde_json then passes): never less.
            if crate::json_syntax::is_object(&body) {
                proptest::prop_assert!(
                    serde_check_json_object(&body).is_ok(),
                    "{:?}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    #[test]
    fn event_streams_are_known_by_content_type() {
        let check = |v: &'static str, expected: bool| {
            assert_eq!(
                is_event_stream(&HeaderValue::from_static(v)),
                expected,
                "{v}"
            );
        };
        check("text/event-stream", true);
        check("Text/Event-Stream; charset=utf-8", true);
        check("application/json; charset=UTF-8", false);
        check("text/plain", false);
    }
}
