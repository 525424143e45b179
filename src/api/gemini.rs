//! `/v1beta/models…`: the native Gemini API, passed through. Body bytes go upstream untouched;
//! only the credential changes (the client's token out, a pool key in) and the same rotation,
//! failover and health accounting apply. Errors are Google-shaped.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::{allowed_chain, chain_exhausted, clean_model_name, next_in_chain, resolve};
use crate::error::ProxyError;
use crate::proxy::{self, Body as Upstream, Call, Delivery};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::router::{GeminiAction, Route};
use crate::server::{full, read_body, Reply};
use crate::state::{App, Snapshot};

pub async fn passthrough(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    route: Route,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let query = forwarded_query(req.uri().query());
    match route {
        Route::GeminiListModels => {
            let path = with_query("/v1beta/models".to_string(), &query);
            buffered(snap, None, Method::GET, &path, None, log).await
        }
        Route::GeminiGetModel(id) => {
            let model = clean_model_name(&id)?;
            caller.check_model(model)?;
            let path = with_query(format!("/v1beta/models/{model}"), &query);
            buffered(snap, None, Method::GET, &path, None, log).await
        }
        Route::GeminiCall { model, action } => {
            let requested = clean_model_name(&model)?.to_string();
            log.model = Some(requested.clone());
            let chain =
                allowed_chain(caller, &requested, resolve(&snap.config.models, &requested))?;
            let body = read_body(req, snap.config.server.max_body).await?;
            let streaming = action == GeminiAction::StreamGenerateContent;
            let sse = query.split('&').any(|p| p == "alt=sse");
            let mut last_error = None;
            for (i, target) in chain.iter().enumerate() {
                let path = with_query(
                    format!("/v1beta/models/{}:{}", target.model, action.as_str()),
                    &query,
                );
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
                };
                match proxy::execute(snap, call, log).await {
                    Ok(served) => {
                        let content_type = served
                            .content_type
                            .clone()
                            .unwrap_or(HeaderValue::from_static("application/json"));
                        return Ok(match served.body {
                            Upstream::Full(bytes) => Reply::Done(respond(bytes, content_type)),
                            Upstream::Stream(response) => Reply::Streaming(
                                relay::start(
                                    app.clone(),
                                    snap.clone(),
                                    served.lease,
                                    response,
                                    Shape::Passthrough { sse },
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
    let call = Call {
        model,
        method,
        path_and_query: path,
        body,
        delivery: Delivery::Buffered,
    };
    let served = proxy::execute(snap, call, log).await?;
    let content_type = served
        .content_type
        .unwrap_or(HeaderValue::from_static("application/json"));
    match served.body {
        Upstream::Full(bytes) => Ok(Reply::Done(respond(bytes, content_type))),
        Upstream::Stream(_) => Err(ProxyError::Internal("expected a buffered body".into())),
    }
}

fn respond(bytes: Bytes, content_type: HeaderValue) -> Response<crate::server::Body> {
    let mut response = Response::new(full(bytes));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// The client's query without its credential (`key=`), which must never travel upstream.
fn forwarded_query(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("key"))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_key_never_travels_upstream() {
        assert_eq!(forwarded_query(Some("alt=sse&key=sk-secret")), "alt=sse");
        assert_eq!(forwarded_query(Some("key=sk-secret")), "");
        assert_eq!(forwarded_query(None), "");
        assert_eq!(
            forwarded_query(Some("pageSize=5&pageToken=abc")),
            "pageSize=5&pageToken=abc"
        );
    }
}
