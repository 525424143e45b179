//! The Live API: Google's `BidiGenerateContent` WebSocket (`/ws/google.ai.generativelanguage.
//! {version}.GenerativeService.BidiGenerateContent[Constrained]`) and ephemeral tokens
//! (`POST /v1alpha/auth_tokens`), as Google behaves:
//!
//! - the upgrade is accepted whatever the credential; the first message must be a `setup` with a
//!   model, else the session closes with 1007;
//! - the credential is judged then: none, 1008 (Google's unregistered caller); an unknown key,
//!   1007 "API key not valid. Please pass a valid API key."; the Constrained method takes only
//!   `Authorization: Token auth_tokens/…` (or `?access_token=`) of a token this fake minted;
//! - a scripted error reply for the session's key and model (the same scripts as REST calls)
//!   closes it the way Google closes a WebSocket for that error: 429 (quota) and 5xx with 1011,
//!   400 with 1007, 403/404 with 1008, the reason Google's message cut to 123 bytes;
//!   `Reply::hang()` never answers the setup;
//! - otherwise `{"setupComplete": {}}`, then for each `clientContent` (or `client_content`, the
//!   proto name google-genai sends) turn a `serverContent`
//!   with `modelTurn.parts[].text` (the default text, naming the model and masked key) and a
//!   `serverContent.turnComplete` with `usageMetadata`; server messages go out as binary frames,
//!   as Google sends them. A turn whose text is `close:{code}` makes the fake close the session
//!   with that code instead; `flood:{n}` makes it send `n` messages of 64 KiB as fast as the
//!   connection takes them (`LiveSession::sent` counts them).
//!
//! `FakeGemini::refuse_live_handshake` makes the upgrade itself fail for a key (an HTTP status
//! and Google's error body instead of the 101).
//!
//! Each session is recorded (`LiveSession`): its key, model, path, the client's messages and how
//! the client closed it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, Message};
use tokio_tungstenite::WebSocketStream;

use super::body::{full, FakeBody};
use super::{default_text, lock, next_reply, Reply, Scope, Shared};

/// Tokens `usageMetadata` reports per turn.
pub const LIVE_PROMPT_TOKENS: u64 = 5;
pub const LIVE_RESPONSE_TOKENS: u64 = 7;

/// One Live session as the fake saw it.
#[derive(Debug, Clone, Default)]
pub struct LiveSession {
    pub path: String,
    /// The key it was opened with (`x-goog-api-key` or `?key=`), or the key that minted its
    /// ephemeral token.
    pub key: Option<String>,
    /// The ephemeral token it presented (Constrained method).
    pub ephemeral: Option<String>,
    /// Every header of the upgrade request.
    pub headers: http::HeaderMap,
    pub query: Option<String>,
    /// `setup.model` without `models/`.
    pub model: Option<String>,
    /// The client's messages, parsed.
    pub messages: Vec<Value>,
    /// The close code the fake sent, if it closed the session.
    pub closed_with: Option<u16>,
    /// The client's close code, if the client closed it.
    pub client_closed: Option<u16>,
    /// Whether the session ended (either way).
    pub ended: bool,
    /// Server messages sent after `setupComplete`.
    pub sent: u64,
}

pub(super) fn is_live(path: &str) -> bool {
    path.starts_with("/ws/google.ai.generativelanguage.")
}

/// The upgrade: 101 and a session task, or 400 for a request that is not a WebSocket upgrade.
pub(super) fn upgrade(shared: Arc<Shared>, req: Request<Incoming>) -> Response<FakeBody> {
    let Some(accept) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return full(400, "text/plain", "not a WebSocket upgrade".into(), &[]);
    };
    let query = super::route::parse_query(req.uri().query());
    let path = req.uri().path().to_string();
    let constrained = path.ends_with("BidiGenerateContentConstrained");
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if query.contains_key("key") {
        shared.keys_in_url.fetch_add(1, Ordering::SeqCst);
    }
    let (key, ephemeral) = if constrained {
        let token = header("authorization")
            .and_then(|v| v.strip_prefix("Token ").map(str::to_owned))
            .or_else(|| query.get("access_token").cloned());
        let key = token
            .as_ref()
            .and_then(|t| lock(&shared.live_tokens).get(t).cloned());
        (key, token)
    } else {
        let key = header("x-goog-api-key")
            .filter(|k| !k.is_empty())
            .or_else(|| query.get("key").cloned());
        (key, None)
    };
    let refusal = key
        .as_ref()
        .and_then(|k| lock(&shared.live_handshake).get(k).cloned());
    let index = {
        let mut sessions = lock(&shared.live_sessions);
        sessions.push(LiveSession {
            path: path.clone(),
            key: key.clone(),
            ephemeral: ephemeral.clone(),
            headers: req.headers().clone(),
            query: req.uri().query().map(str::to_owned),
            ..LiveSession::default()
        });
        sessions.len() - 1
    };
    if let Some((status, body)) = refusal {
        // Refused at the handshake, as a load balancer or Google's front end does.
        lock(&shared.live_sessions)[index].closed_with = Some(status);
        lock(&shared.live_sessions)[index].ended = true;
        return full(status, super::body::JSON_CT, body.to_string().into(), &[]);
    }
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(&shared, index, ws, key, constrained && ephemeral.is_some()).await;
        lock(&shared.live_sessions)[index].ended = true;
    });
    let mut response = full(101, "text/plain", bytes::Bytes::new(), &[]);
    let headers = response.headers_mut();
    headers.remove(http::header::CONTENT_TYPE);
    headers.insert(http::header::UPGRADE, "websocket".parse().unwrap());
    headers.insert(http::header::CONNECTION, "upgrade".parse().unwrap());
    headers.insert("sec-websocket-accept", accept.parse().unwrap());
    response
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_string().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

async fn session(
    shared: &Arc<Shared>,
    index: usize,
    mut ws: Ws,
    key: Option<String>,
    minted: bool,
) {
    let record = |f: &dyn Fn(&mut LiveSession)| f(&mut lock(&shared.live_sessions)[index]);
    let closing = |code: u16| record(&|s: &mut LiveSession| s.closed_with = Some(code));
    // Google waits for the setup before judging anything.
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
    let setup: Value = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str()).unwrap_or(Value::Null),
        Ok(Some(Ok(Message::Binary(b)))) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Ok(Some(Ok(Message::Close(frame)))) => {
            record(&|s: &mut LiveSession| {
                s.client_closed = frame.as_ref().map(|f| u16::from(f.code))
            });
            return;
        }
        _ => return,
    };
    record(&|s: &mut LiveSession| s.messages.push(setup.clone()));
    let Some(model) = setup
        .pointer("/setup/model")
        .and_then(Value::as_str)
        .map(|m| m.strip_prefix("models/").unwrap_or(m).to_string())
    else {
        closing(1007);
        return close(
            &mut ws,
            1007,
            "Invalid JSON payload received. Unknown name \"\": Root element must be a message.",
        )
        .await;
    };
    record(&|s: &mut LiveSession| s.model = Some(model.clone()));
    let Some(key) = key else {
        closing(1008);
        let reason = if minted {
            "Invalid ephemeral token."
        } else {
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."
        };
        return close(&mut ws, 1008, reason).await;
    };
    let known = lock(&shared.keys)
        .as_ref()
        .is_none_or(|keys| keys.contains(&key));
    if !known {
        closing(1007);
        return close(
            &mut ws,
            1007,
            "API key not valid. Please pass a valid API key.",
        )
        .await;
    }
    *lock(&shared.log)
        .hits
        .entry((key.clone(), model.clone()))
        .or_default() += 1;
    let scopes = [
        Scope::KeyModel(key.clone(), model.clone()),
        Scope::Key(key.clone()),
        Scope::Model(model.clone()),
        Scope::Any,
    ];
    let mut reply = next_reply(shared, &scopes);
    while let Some(Reply::Delay(d, inner)) = reply {
        tokio::time::sleep(d).await;
        reply = Some(*inner);
    }
    match reply {
        Some(Reply::Hang) => {
            // Never answers the setup; ends when the other side leaves.
            while let Some(Ok(_)) = ws.next().await {}
            return;
        }
        Some(Reply::Json { status, body, .. }) if status >= 400 => {
            let message = body
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("Internal error encountered.")
                .to_string();
            let code = match status {
                400 => 1007,
                403 | 404 => 1008,
                _ => 1011,
            };
            closing(code);
            return close(&mut ws, code, &message).await;
        }
        _ => {}
    }
    if ws
        .send(Message::binary(json!({"setupComplete": {}}).to_string()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let message = match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                serde_json::from_str::<Value>(t.as_str()).unwrap_or(Value::Null)
            }
            Some(Ok(Message::Binary(b))) => {
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null)
            }
            Some(Ok(Message::Close(frame))) => {
                record(&|s: &mut LiveSession| {
                    s.client_closed = Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)))
                });
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return,
        };
        record(&|s: &mut LiveSession| s.messages.push(message.clone()));
        // Google reads proto JSON: the field's JSON name or its proto name (google-genai sends
        // `client_content`).
        let Some(turns) = message
            .pointer("/clientContent/turns")
            .or_else(|| message.pointer("/client_content/turns"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        let text: String = turns
            .iter()
            .filter_map(|t| t.get("parts").and_then(Value::as_array))
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        if let Some(n) = text
            .strip_prefix("flood:")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            // `n` messages of 64 KiB, as fast as the connection takes them.
            let chunk = "z".repeat(64 * 1024);
            for _ in 0..n {
                let m = json!({"serverContent": {"modelTurn": {"parts": [{"text": chunk}]}}});
                if ws.send(Message::binary(m.to_string())).await.is_err() {
                    return;
                }
                record(&|s: &mut LiveSession| s.sent += 1);
            }
            continue;
        }
        if let Some(code) = text
            .strip_prefix("close:")
            .and_then(|c| c.trim().parse::<u16>().ok())
        {
            closing(code);
            return close(&mut ws, code, "closed by the fake as asked").await;
        }
        let answer = json!({"serverContent": {"modelTurn": {"parts": [{"text": default_text(&model, &key)}]}}});
        let done = json!({
            "serverContent": {"turnComplete": true},
            "usageMetadata": {
                "promptTokenCount": LIVE_PROMPT_TOKENS,
                "responseTokenCount": LIVE_RESPONSE_TOKENS,
                "totalTokenCount": LIVE_PROMPT_TOKENS + LIVE_RESPONSE_TOKENS,
            }
        });
        for m in [answer, done] {
            if ws.send(Message::binary(m.to_string())).await.is_err() {
                return;
            }
        }
    }
}

/// `POST /v1alpha/auth_tokens`: an ephemeral token on `key`, remembered for the Constrained
/// method.
pub(super) fn mint(shared: &Shared, key: &str, body: Option<&Value>) -> Response<FakeBody> {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let name = format!("auth_tokens/fakeEphemeral{id:06}x{:08x}", fastrand_like(id));
    lock(&shared.live_tokens).insert(name.clone(), key.to_string());
    let mut answer = json!({ "name": name });
    if let Some(expire) = body.and_then(|b| b.get("expireTime")) {
        answer["expireTime"] = expire.clone();
    }
    full(200, super::body::JSON_CT, answer.to_string().into(), &[])
}

/// A cheap scramble so minted names are not sequential.
fn fastrand_like(id: u64) -> u32 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

impl super::FakeGemini {
    /// Every Live session so far, in order.
    pub fn live_sessions(&self) -> Vec<LiveSession> {
        lock(&self.shared.live_sessions).clone()
    }

    /// Refuses every Live handshake with `key` with `status` and `reply`'s Google error body
    /// (recorded as a session whose `closed_with` is the status).
    pub fn refuse_live_handshake(&self, key: &str, status: u16, reply: &Reply) {
        lock(&self.shared.live_handshake).insert(key.to_string(), (status, reply.body().clone()));
    }

    /// Ephemeral tokens minted so far, with their keys.
    pub fn live_tokens(&self) -> Vec<(String, String)> {
        lock(&self.shared.live_tokens)
            .iter()
            .map(|(t, k)| (t.clone(), k.clone()))
            .collect()
    }
}
