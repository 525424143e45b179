//! Thin handlers, one module per family of routes. A handler reads the body (within
//! `max_body`), parses it, resolves the model, and hands the upstream work to `proxy`; it
//! never builds an error response itself (that is `error`'s job).

pub mod admin;
// Anthropic Messages API (issue #17).
pub mod anthropic;
pub mod chat;
pub mod embeddings;
pub mod explain;
pub mod gemini;
pub mod health;
pub mod images;
pub mod ip;
// The Live API's WebSocket and its ephemeral tokens (issue #18).
pub mod live;
pub mod models;
pub mod native;
pub mod responses;
pub mod run_gemini;
pub mod stats;

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::body::{full, json_response, Body, Reply};
use crate::config::Models;
use crate::error::ProxyError;
use crate::request_log::RequestLog;
use crate::router::Route;
use crate::state::{App, Snapshot};

pub async fn dispatch(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    route: Route,
    req: Request<Incoming>,
    caller: Caller,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    check_content_coding(req.headers())?;
    match route {
        Route::ChatCompletions => chat::completions(app, snap, &caller, req, log).await,
        Route::Messages => anthropic::messages(app, snap, &caller, req, log).await,
        Route::CountTokens => anthropic::count_tokens(app, snap, &caller, req, log).await,
        // Responses API (issue #17).
        Route::Responses => responses::create(app, snap, &caller, req, log).await,
        Route::ResponsesInputTokens => responses::input_tokens(app, snap, &caller, req, log).await,
        Route::StoredResponse { id, delete } => responses::stored(app, &caller, &id, delete)
            .await
            .map(Reply::Done),
        Route::ResponseInputItems(id) => {
            responses::input_items(app, &caller, &id, req.uri().query())
                .await
                .map(Reply::Done)
        }
        Route::ListModels => models::list(app, snap, &caller, log).await.map(Reply::Done),
        Route::GetModel(id) => models::get(app, snap, &caller, &id, log)
            .await
            .map(Reply::Done),
        Route::AnthropicListModels => models::list_anthropic(app, snap, &caller, log)
            .await
            .map(Reply::Done),
        Route::AnthropicGetModel(id) => models::get_anthropic(app, snap, &caller, &id, log)
            .await
            .map(Reply::Done),
        Route::Embeddings => embeddings::create(app, snap, &caller, req, log).await,
        Route::ImageGenerations => images::generations(snap, &caller, req, log).await,
        Route::RunGemini => run_gemini::run(app, snap, &caller, req, log).await,
        Route::Explain => explain::explain(snap, req.uri().query()).map(Reply::Done),
        Route::AdminReload => admin::reload(app).await.map(Reply::Done),
        Route::ResetKeys => Ok(Reply::Done(admin::reset_keys(app, snap))),
        Route::ResetKeyHealth => admin::reset_key_health(app, snap, req)
            .await
            .map(Reply::Done),
        Route::Stats => Ok(Reply::Done(stats::stats(app, snap))),
        Route::Recommendations => Ok(Reply::Done(stats::recommendations(snap))),
        Route::IpConfig => Ok(Reply::Done(ip::config(snap, &caller))),
        Route::TestIp => ip::test(snap, &caller, req).await.map(Reply::Done),
        Route::Metrics => metrics_response(app, snap).map(Reply::Done),
        Route::Dashboard(asset) => {
            crate::dashboard::page(app, snap, &caller, &asset, req.headers())
                .await
                .map(Reply::Done)
        }
        Route::DashboardState => crate::dashboard::state(app, snap).map(Reply::Done),
        Route::DashboardLogin => crate::dashboard::login(app, snap, &caller, req)
            .await
            .map(Reply::Done),
        Route::DashboardLogout => Ok(Reply::Done(crate::dashboard::logout(
            app,
            req.headers(),
            caller.https,
        ))),
        Route::Native => native::passthrough(app, snap, &caller, req, log).await,
        Route::UploadSession(id) => native::upload_session(app, snap, &id, req, log).await,
        Route::Live {
            version,
            constrained,
        } => live::connect(app, snap, &caller, version, constrained, req, log).await,
        Route::AuthTokens => live::mint(app, snap, &caller, req, log).await,
        Route::GeminiListModels | Route::GeminiGetModel(_) | Route::GeminiCall { .. } => {
            gemini::passthrough(app, snap, &caller, route, req, log).await
        }
        Route::Health => Ok(Reply::Done(health::health(snap))),
        Route::Root => Ok(Reply::Done(json_response(
            StatusCode::OK,
            &serde_json::json!({
                "service": "gemini-rotator",
                "status": "ok",
                "api": ["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1beta/models"],
                "health": "/health",
                "dashboard": "/dashboard",
            }),
        ))),
        Route::Livez => Ok(Reply::Done(health::livez())),
        Route::Readyz => Ok(Reply::Done(health::readyz(app))),
        Route::Status => Ok(Reply::Done(health::status(app, snap))),
        Route::NotFound(_) => Err(ProxyError::not_found("unknown path")),
        Route::MethodNotAllowed(_) => Err(ProxyError::MethodNotAllowed),
    }
}

/// `GET /metrics`: the OpenMetrics text Prometheus scrapes.
fn metrics_response(app: &App, snap: &Snapshot) -> Result<Response<Body>, ProxyError> {
    let text = crate::metrics::render(app, snap)
        .map_err(|e| ProxyError::Internal(format!("metrics encoding failed: {e}")))?;
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// The model a client named, without the prefixes some clients add (`models/`, `google/`).
/// Refuses names that could escape the upstream URL path.
pub fn clean_model_name(raw: &str) -> Result<&str, ProxyError> {
    let name = raw.trim();
    let name = name.strip_prefix("models/").unwrap_or(name);
    let name = name.strip_prefix("google/").unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(name)
    } else {
        Err(ProxyError::BadRequest {
            message: format!(
                "'{}' is not a valid model name",
                crate::excerpt::excerpt(raw)
            ),
            param: Some("model".into()),
        })
    }
}

/// A body in a content coding (gzip, br, zstd…) is refused before it is read, on every route:
/// none decodes one, and read as JSON it would get a parse error that misleads. `identity`
/// is no coding.
fn check_content_coding(headers: &http::HeaderMap) -> Result<(), ProxyError> {
    let Some(value) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let coding = String::from_utf8_lossy(value.as_bytes());
    let coding = coding.trim();
    if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        return Ok(());
    }
    Err(ProxyError::UnsupportedEncoding {
        coding: crate::excerpt::excerpt(coding).into_owned(),
    })
}

/// After model `i` of an alias chain failed with `error`: `Ok(error)` (logged) when the chain
/// goes on with the next model, `Err(error)` when the client gets it now. Only "no key can
/// serve" and Google's 429/503 move on: any other error would fail the same way on the next.
pub(crate) fn next_in_chain(
    chain: &[ChainStep],
    i: usize,
    error: ProxyError,
) -> Result<ProxyError, ProxyError> {
    let moves_on = match &error {
        ProxyError::NoKey { .. } | ProxyError::ModelNotFound { .. } => true,
        ProxyError::UpstreamFailed { status, .. } => {
            *status == StatusCode::SERVICE_UNAVAILABLE || *status == StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    };
    match (chain.get(i), chain.get(i + 1)) {
        (Some(failed), Some(next)) if moves_on => {
            tracing::info!(
                model = %failed.model,
                next = %next.model,
                reason = %error,
                "falling back to the next model of the alias"
            );
            Ok(error)
        }
        _ => Err(error),
    }
}

/// The upstream path of a generation for `model`: `streamGenerateContent?alt=sse` or
/// `generateContent`.
pub(crate) fn generate_path(model: &str, stream: bool) -> String {
    if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    }
}

/// A 200 whose body turned out to be a Google error: reported against the key that served it
/// (the attempt loop saw only the status), and the client's error.
pub(crate) fn failed_body(
    snap: &Snapshot,
    lease: &crate::pool::Lease,
    error: crate::translate::TranslateError,
) -> ProxyError {
    if let crate::translate::TranslateError::UpstreamError { code, raw, .. } = &error {
        snap.pool.report(
            lease,
            &crate::classify::classify(*code, raw),
            std::time::Instant::now(),
        );
    }
    chat::from_translate(error)
}

/// Gemini's `countTokens` on the first model of `chain` that answers (moving on by
/// `next_in_chain`); `body` makes each model's request. Google's answer, read whole.
pub(crate) async fn count_tokens_on_chain(
    snap: &Snapshot,
    chain: &[ChainStep],
    log: &mut RequestLog,
    mut body: impl FnMut(&ChainStep) -> Result<Vec<u8>, ProxyError>,
) -> Result<bytes::Bytes, ProxyError> {
    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        let path = format!("/v1beta/models/{}:countTokens", target.model);
        let call = crate::proxy::Call {
            model: Some(&target.model),
            method: http::Method::POST,
            path_and_query: &path,
            body: Some(bytes::Bytes::from(body(target)?)),
            delivery: crate::proxy::Delivery::Buffered,
            pinned: None,
            native: None,
        };
        match crate::proxy::execute(snap, call, log).await {
            Ok(served) => {
                let crate::proxy::Payload::Full(bytes) = served.body else {
                    return Err(ProxyError::Internal(
                        "countTokens answered as a stream".into(),
                    ));
                };
                return Ok(bytes);
            }
            Err(e) => last_error = Some(next_in_chain(chain, i, e)?),
        }
    }
    Err(chain_exhausted(last_error))
}

/// What the client gets when every model of a chain failed over: the last model's error.
pub(crate) fn chain_exhausted(last_error: Option<ProxyError>) -> ProxyError {
    last_error.unwrap_or_else(|| ProxyError::Internal("empty model chain".into()))
}

/// One model to try, with the settings an alias attaches to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStep {
    pub model: String,
    pub reasoning_effort: Option<String>,
}

impl ChainStep {
    /// What the translators need of this target, with `upstream.safety`.
    pub fn translated<'a>(&'a self, safety: Option<&'a str>) -> crate::translate::Target<'a> {
        crate::translate::Target {
            model: &self.model,
            reasoning_effort: self.reasoning_effort.as_deref(),
            safety,
        }
    }
}

/// Resolves an alias (exact, or the most specific glob key: `Models::alias`) to its chain of
/// real models; a plain model name is a chain of one.
pub fn resolve(models: &Models, name: &str) -> Vec<ChainStep> {
    match models.alias(name) {
        Some(alias) => alias
            .models
            .iter()
            .map(|m| ChainStep {
                model: m.clone(),
                reasoning_effort: alias.reasoning_effort.clone(),
            })
            .collect(),
        None => vec![ChainStep {
            model: name.to_string(),
            reasoning_effort: None,
        }],
    }
}

/// The chain narrowed to what this caller's token may use (an alias the token may use
/// allows its targets). Empty chain: 403.
pub fn allowed_chain(
    caller: &Caller,
    requested: &str,
    chain: Vec<ChainStep>,
) -> Result<Vec<ChainStep>, ProxyError> {
    if caller.allows(requested) {
        return Ok(chain);
    }
    let allowed: Vec<ChainStep> = chain
        .into_iter()
        .filter(|t| caller.allows(&t.model))
        .collect();
    if allowed.is_empty() {
        return Err(ProxyError::ModelNotAllowed {
            model: requested.to_string(),
        });
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let check = |raw: &str, expected: Option<&str>| {
            assert_eq!(clean_model_name(raw).ok(), expected, "{raw}");
        };
        check("gemini-2.5-flash", Some("gemini-2.5-flash"));
        check("models/gemini-2.5-flash", Some("gemini-2.5-flash"));
        check("google/gemini-3-pro-preview", Some("gemini-3-pro-preview"));
        check("gemini-2.5-flash:generateContent", None);
        check("../../v1beta/files", None);
        check("gemini?key=x", None);
        check("", None);
        check(".hidden", None);
    }
}
