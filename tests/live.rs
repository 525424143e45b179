//! The Live API through the pool (issue #18 item 6): the `BidiGenerateContent` WebSocket
//! tunnelled to the fake Gemini with a pool key, the client token checked and never forwarded,
//! a key chosen for the model of the first `setup` and swapped when Google refuses it, either
//! side's close ending the other, the bounds (message size, setup wait, idle, in flight), the
//! session counted as one request, and ephemeral tokens minted through the pool.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const MODEL: &str = "gemini-2.5-flash";
const PATH: &str = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
const CONSTRAINED: &str =
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";
/// Every wait on a socket in these tests.
const WAIT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `path` on the proxy with `headers`.
async fn dial(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let url = format!("ws://{}{path}", proxy.addr());
    let mut request = url.into_client_request().expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")?;
    Ok(ws)
}

/// Opens a session with the test token.
async fn open(proxy: &Proxy) -> Ws {
    dial(proxy, PATH, &[("x-goog-api-key", TEST_TOKEN)])
        .await
        .expect("upgrade")
}

/// `open`, waiting (bounded) while the one place in flight is still held: a session frees it
/// when its task ends, a moment after its last close reached the client.
async fn open_when_free(proxy: &Proxy) -> Ws {
    for _ in 0..250 {
        match dial(proxy, PATH, &[("x-goog-api-key", TEST_TOKEN)]).await {
            Ok(ws) => return ws,
            Err(tungstenite::Error::Http(r)) if r.status().as_u16() == 503 => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("upgrade: {e}"),
        }
    }
    panic!("the place in flight was never freed");
}

fn setup_message(model: &str) -> Message {
    Message::text(
        json!({"setup": {"model": format!("models/{model}"), "generationConfig": {"responseModalities": ["TEXT"]}}})
            .to_string(),
    )
}

fn turn(text: &str) -> Message {
    Message::text(
        json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}})
            .to_string(),
    )
}

/// The next data message as JSON, or the close (code, reason) that ended the session.
async fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(t.as_str()).expect("JSON"))
            }
            Some(Ok(Message::Binary(b))) => return Ok(serde_json::from_slice(&b).expect("JSON")),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_string())
                }))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err((1006, e.to_string())),
            None => return Err((1006, "ended".into())),
        }
    }
}

/// Sends the setup and expects `setupComplete`.
async fn set_up(ws: &mut Ws, model: &str) {
    ws.send(setup_message(model)).await.expect("send setup");
    let first = next(ws).await.expect("setupComplete");
    assert!(first.get("setupComplete").is_some(), "{first}");
}

/// One text turn: the model's text and the turn's end (with its usage).
async fn one_turn(ws: &mut Ws, text: &str) -> String {
    ws.send(turn(text)).await.expect("send turn");
    let answer = next(ws).await.expect("model turn");
    let text = answer
        .pointer("/serverContent/modelTurn/parts/0/text")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_string();
    let done = next(ws).await.expect("turn complete");
    assert_eq!(
        done.pointer("/serverContent/turnComplete"),
        Some(&json!(true)),
        "{done}"
    );
    text
}

/// Waits (bounded) until `check` holds for the fake's sessions.
async fn until(
    fake: &FakeGemini,
    what: &str,
    check: impl Fn(&[LiveSession]) -> bool,
) -> Vec<LiveSession> {
    for _ in 0..250 {
        let sessions = fake.live_sessions();
        if check(&sessions) {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: {:#?}", fake.live_sessions());
}

async fn stats(proxy: &Proxy, ready: impl Fn(&Value) -> bool) -> Value {
    let mut stats = Value::Null;
    for _ in 0..250 {
        stats = proxy
            .get("/stats")
            .send()
            .await
            .expect("/stats")
            .json()
            .await
            .unwrap_or(Value::Null);
        if ready(&stats) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stats
}

#[tokio::test]
async fn a_session_runs_on_a_pool_key_and_counts_as_one_request() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| c).await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    let text = one_turn(&mut ws, "hello").await;
    assert_eq!(text, default_text(MODEL, &keys[0]));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .await
    .expect("close");

    let sessions = until(&fake, "the session ends", |s| s.len() == 1 && s[0].ended).await;
    let session = &sessions[0];
    assert_eq!(session.key.as_deref(), Some(keys[0].as_str()));
    assert_eq!(session.model.as_deref(), Some(MODEL));
    assert_eq!(session.path, PATH);
    assert_eq!(
        session.client_closed,
        Some(1000),
        "the client's close reached Google"
    );
    // The client token never left the proxy, in a header or the URL.
    for (name, value) in &session.headers {
        assert!(
            !value
                .as_bytes()
                .windows(TEST_TOKEN.len())
                .any(|w| w == TEST_TOKEN.as_bytes()),
            "{name}"
        );
    }
    assert_eq!(session.query, None);
    assert_eq!(
        session.messages[0]["setup"]["model"],
        format!("models/{MODEL}")
    );
    assert_eq!(
        session.messages[1]["clientContent"]["turns"][0]["parts"][0]["text"],
        "hello"
    );

    let stats = stats(&proxy, |s| {
        s["clients"].as_object().is_some_and(|c| !c.is_empty())
    })
    .await;
    let clients = stats["clients"].as_object().cloned().unwrap_or_default();
    let (_, mine) = clients.iter().next().expect("one client");
    assert_eq!(mine["requests"], 1, "{stats}");
    assert_eq!(mine["prompt_tokens"], LIVE_PROMPT_TOKENS, "{stats}");
    assert_eq!(mine["completion_tokens"], LIVE_RESPONSE_TOKENS, "{stats}");
    let key = &stats["api_key_stats"][mask(&keys[0])]["models"][MODEL];
    assert_eq!(key["total_requests"], 1, "{stats}");
    let logs = proxy.logs();
    assert!(
        logs.contains("route=\"live\"") && logs.contains("status=101"),
        "{logs}"
    );
    assert!(
        !logs.contains(&keys[0]) && !logs.contains(TEST_TOKEN),
        "{logs}"
    );
}

#[tokio::test]
async fn the_token_is_checked_and_the_v1_route_takes_it_in_the_url() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| c).await;
    for headers in [
        vec![],
        vec![("x-goog-api-key", "sk-TEST-wrong-token-000000")],
    ] {
        match dial(&proxy, PATH, &headers).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                        .expect("JSON");
                assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "{body}");
            }
            other => panic!("expected a 401, got {:?}", other.map(|_| "a session")),
        }
    }
    assert!(
        fake.live_sessions().is_empty(),
        "no upstream connection for a wrong token"
    );

    // google-genai on `v1` with the key in `?key=`.
    let v1 = format!(
        "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent?key={TEST_TOKEN}"
    );
    let mut ws = dial(&proxy, &v1, &[]).await.expect("upgrade");
    set_up(&mut ws, MODEL).await;
    assert_eq!(one_turn(&mut ws, "hi").await, default_text(MODEL, &keys[0]));
    let sessions = fake.live_sessions();
    assert_eq!(
        sessions[0].path,
        "/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    );
    assert_eq!(
        sessions[0].query, None,
        "no key or token in the upstream URL"
    );
    assert_eq!(fake.keys_in_url(), 0);

    // Not a WebSocket upgrade: Google's 400 shape.
    let plain = proxy
        .get(PATH)
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(plain.status().as_u16(), 400);
    let body: Value = plain.json().await.expect("JSON");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
}

#[tokio::test]
async fn a_refused_key_is_reported_and_the_next_key_serves() {
    let keys = fake_keys(3);
    // The first key is not valid at Google; the second is out of quota for the model.
    let fake = FakeGemini::builder().keys(&keys[1..]).start().await;
    fake.on(&keys[1], MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", r#"strategy = "round_robin""#)
    })
    .await;

    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    assert_eq!(
        one_turn(&mut ws, "hello").await,
        default_text(MODEL, &keys[2])
    );
    let sessions = fake.live_sessions();
    let used: Vec<(Option<String>, Option<u16>)> = sessions
        .iter()
        .map(|s| (s.key.clone(), s.closed_with))
        .collect();
    assert_eq!(
        used,
        vec![
            (Some(keys[0].clone()), Some(1007)),
            (Some(keys[1].clone()), Some(1011)),
            (Some(keys[2].clone()), None),
        ],
        "an invalid key (1007), a quota close (1011), then a key that serves"
    );
    ws.close(None).await.expect("close");

    // What was learned sticks: the next session goes straight to the key that can serve.
    let mut again = open(&proxy).await;
    set_up(&mut again, MODEL).await;
    assert_eq!(fake.live_sessions().len(), 4);
    assert_eq!(
        fake.live_sessions()[3].key.as_deref(),
        Some(keys[2].as_str())
    );
    let stats = stats(&proxy, |_| true).await;
    let status = proxy
        .get("/status")
        .send()
        .await
        .expect("/status")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        status.contains("disabled") || stats.to_string().contains("disabled"),
        "the invalid key is disabled: {status}"
    );
}

#[tokio::test]
async fn a_refused_handshake_is_classified_and_the_next_key_serves() {
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    fake.refuse_live_handshake(&keys[0], 503, &Reply::overloaded());
    fake.refuse_live_handshake(&keys[1], 429, &Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", r#"strategy = "round_robin""#)
    })
    .await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    assert_eq!(
        one_turn(&mut ws, "hello").await,
        default_text(MODEL, &keys[2])
    );
    let tried: Vec<_> = fake
        .live_sessions()
        .iter()
        .map(|s| (s.key.clone(), s.closed_with))
        .collect();
    assert_eq!(
        tried,
        vec![
            (Some(keys[0].clone()), Some(503)),
            (Some(keys[1].clone()), Some(429)),
            (Some(keys[2].clone()), None),
        ]
    );
    // The quota refusal rests the key for the model: the next session skips it.
    ws.close(None).await.expect("close");
    let mut again = open(&proxy).await;
    set_up(&mut again, MODEL).await;
    let sessions = fake.live_sessions();
    assert_ne!(
        sessions.last().and_then(|s| s.key.clone()),
        Some(keys[1].clone()),
        "{sessions:#?}"
    );
}

#[tokio::test]
async fn a_client_mistake_is_passed_back_without_trying_other_keys() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::bad_request("Request contains an invalid argument."));
    let proxy = start(&fake, &keys, |c| c).await;
    let mut ws = open(&proxy).await;
    ws.send(setup_message(MODEL)).await.expect("setup");
    assert_eq!(
        next(&mut ws).await,
        Err((1007, "Request contains an invalid argument.".to_string()))
    );
    assert_eq!(fake.live_sessions().len(), 1, "one key tried");
}

#[tokio::test]
async fn the_model_comes_from_the_setup_and_the_tokens_model_list_applies() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let limited = "sk-TEST-limited-token-0000000";
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "auth",
            &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "limited", token = "{limited}", models = ["gemini-2.5-flash"] }}]"#),
        )
    })
    .await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, "gemini-2.5-pro").await;
    one_turn(&mut ws, "hi").await;
    assert_eq!(
        fake.live_sessions()[0].model.as_deref(),
        Some("gemini-2.5-pro")
    );

    let mut ws = dial(&proxy, PATH, &[("x-goog-api-key", limited)])
        .await
        .expect("upgrade");
    ws.send(setup_message("gemini-2.5-pro"))
        .await
        .expect("setup");
    let (code, reason) = next(&mut ws).await.expect_err("refused");
    assert_eq!(code, 1008);
    assert!(reason.contains("not allowed"), "{reason}");
    assert_eq!(
        fake.live_sessions().len(),
        1,
        "no upstream session for a model the token may not use"
    );

    // A first message that is no setup.
    let mut ws = open(&proxy).await;
    ws.send(Message::text(r#"{"clientContent": {}}"#))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await.expect_err("refused").0, 1007);
    assert_eq!(fake.live_sessions().len(), 1);
}

#[tokio::test]
async fn either_side_closing_ends_the_other() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| c).await;

    // Google closes: the client gets its code.
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    ws.send(turn("close:4001")).await.expect("send");
    let (code, reason) = next(&mut ws).await.expect_err("closed");
    assert_eq!(code, 4001);
    assert_eq!(reason, "closed by the fake as asked");

    // The client closes with its own code: Google gets it.
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4002.into(),
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    let sessions = until(&fake, "both sessions end", |s| {
        s.len() == 2 && s.iter().all(|s| s.ended)
    })
    .await;
    assert_eq!(sessions[1].client_closed, Some(4002));

    // The client vanishes without a close: the upstream session ends too.
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    drop(ws);
    until(&fake, "the third session ends", |s| {
        s.len() == 3 && s[2].ended
    })
    .await;
}

#[tokio::test]
async fn bounds_message_size_setup_wait_idle_and_in_flight() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| {
        c.set("server", r#"max_body = "4KiB""#)
            .set("server", r#"body_timeout = "1s""#)
            .set("server", "max_in_flight = 1")
            .set("upstream", r#"idle_timeout = "2s""#)
    })
    .await;

    // No setup in time: closed, no upstream session.
    let mut ws = open_when_free(&proxy).await;
    let started = std::time::Instant::now();
    assert_eq!(next(&mut ws).await.expect_err("closed").0, 1008);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(fake.live_sessions().is_empty());

    // An oversized setup: 1009, no upstream session.
    let mut ws = open_when_free(&proxy).await;
    let huge = json!({"setup": {"model": format!("models/{MODEL}"), "systemInstruction": "x".repeat(8192)}});
    let _ = ws.send(Message::text(huge.to_string())).await;
    assert_eq!(next(&mut ws).await.expect_err("closed").0, 1009);
    assert!(fake.live_sessions().is_empty());

    // An oversized message mid-session: 1009 to the client, the upstream session ends.
    let mut ws = open_when_free(&proxy).await;
    set_up(&mut ws, MODEL).await;
    // While it is open the session holds the one place in flight.
    let busy = proxy.get("/v1/models").send().await.expect("GET");
    assert_eq!(
        busy.status().as_u16(),
        503,
        "a session counts against max_in_flight"
    );
    let _ = ws.send(turn(&"y".repeat(8192))).await;
    assert_eq!(next(&mut ws).await.expect_err("closed").0, 1009);
    until(&fake, "the upstream session ends", |s| {
        s.len() == 1 && s[0].ended
    })
    .await;

    // Idle for upstream.idle_timeout: both sides closed.
    let mut ws = open_when_free(&proxy).await;
    set_up(&mut ws, MODEL).await;
    let started = std::time::Instant::now();
    let (code, reason) = next(&mut ws).await.expect_err("closed");
    assert_eq!(code, 1008, "{reason}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500)
            && started.elapsed() < Duration::from_secs(8)
    );
    until(&fake, "the idle upstream session ends", |s| {
        s.len() == 2 && s[1].ended
    })
    .await;

    // The place in flight is free again once the sessions are over.
    let mut free = false;
    for _ in 0..100 {
        if proxy
            .get("/v1/models")
            .send()
            .await
            .expect("GET")
            .status()
            .as_u16()
            == 200
        {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(free, "the session released its place in flight");
}

#[tokio::test]
async fn ephemeral_tokens_are_minted_on_a_pool_key_and_used_through_the_proxy() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| c).await;
    let minted = proxy
        .post("/v1alpha/auth_tokens")
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&json!({"uses": 1, "bidiGenerateContentSetup": {"model": format!("models/{MODEL}")}}))
        .send()
        .await
        .expect("mint");
    assert_eq!(minted.status().as_u16(), 200);
    let minted: Value = minted.json().await.expect("JSON");
    let name = minted["name"].as_str().expect("a token name").to_string();
    assert!(name.starts_with("auth_tokens/"), "{minted}");
    let on = fake
        .live_tokens()
        .into_iter()
        .find(|(t, _)| *t == name)
        .map(|(_, k)| k)
        .expect("minted at the fake");
    assert!(keys.contains(&on));

    // google-genai: `Authorization: Token auth_tokens/…` on the Constrained method.
    let authorization = format!("Token {name}");
    let mut ws = dial(&proxy, CONSTRAINED, &[("authorization", &authorization)])
        .await
        .expect("upgrade");
    set_up(&mut ws, MODEL).await;
    assert_eq!(one_turn(&mut ws, "hi").await, default_text(MODEL, &on));
    let session = fake.live_sessions()[0].clone();
    assert_eq!(session.path, CONSTRAINED);
    assert_eq!(session.ephemeral.as_deref(), Some(name.as_str()));
    assert!(
        session.headers.get("x-goog-api-key").is_none(),
        "the key does not travel with a token"
    );

    // A token the proxy did not mint, or a client token, is refused before any upstream call.
    for authorization in [
        "Token auth_tokens/forged0000",
        &format!("Bearer {TEST_TOKEN}"),
    ] {
        match dial(&proxy, CONSTRAINED, &[("authorization", authorization)]).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
            other => panic!("expected a 401, got {:?}", other.map(|_| "a session")),
        }
    }
    assert_eq!(fake.live_sessions().len(), 1);

    // The session counted for the token that minted it.
    let stats = stats(&proxy, |s| {
        s["clients"]
            .as_object()
            .is_some_and(|c| c.values().any(|v| v["requests"].as_u64() >= Some(1)))
    })
    .await;
    assert!(
        stats["clients"].as_object().is_some_and(|c| c.len() == 1),
        "{stats}"
    );
}

#[tokio::test]
async fn shutdown_lets_a_session_run_through_the_grace_period_then_closes_it() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let mut proxy = start(&fake, &keys, |c| {
        c.set("server", r#"shutdown_grace = "1s""#)
    })
    .await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    proxy.signal(Signal::Term);
    // Within the grace period the session still works.
    assert_eq!(
        one_turn(&mut ws, "still there?").await,
        default_text(MODEL, &keys[0])
    );
    // Then the proxy closes it as going away, and exits.
    let (code, _) = next(&mut ws).await.expect_err("closed at the drain");
    assert_eq!(code, 1001);
    until(&fake, "the upstream session ends", |s| {
        s.len() == 1 && s[0].ended
    })
    .await;
    assert!(
        proxy.wait_exit(Duration::from_secs(10)).await.is_some(),
        "the proxy exits once its sessions are closed"
    );
}

#[tokio::test]
async fn an_https_base_url_is_dialled_as_wss_with_rustls() {
    use tokio::io::AsyncReadExt;
    // Not a TLS server: it records the first bytes of each connection and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut first = vec![0u8; 3];
            let _ = tokio::time::timeout(WAIT, socket.read_exact(&mut first)).await;
            let _ = seen_tx.send(first);
        }
    });
    let keys = fake_keys(1);
    let proxy = Proxy::builder()
        .config(
            config_for(&format!("https://127.0.0.1:{port}"), &keys)
                .set("models", r#"list = "static""#),
        )
        .start()
        .await;
    let mut ws = open(&proxy).await;
    ws.send(setup_message(MODEL)).await.expect("setup");
    let (code, _) = next(&mut ws).await.expect_err("no upstream");
    assert_eq!(code, 1011);
    let first = tokio::time::timeout(WAIT, seen_rx.recv())
        .await
        .expect("a connection")
        .expect("bytes");
    // A TLS handshake record (ClientHello): the https base URL became wss.
    assert_eq!(first[0], 0x16, "{first:?}");
    assert_eq!(first[1], 0x03, "{first:?}");
    // The proxy is still serving.
    assert_eq!(
        proxy
            .get("/livez")
            .send()
            .await
            .expect("livez")
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn an_alias_chain_moves_to_its_next_model_when_every_key_is_out_of_quota() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    fake.on_model(MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = start(&fake, &keys, |c| {
        c.raw(
            "[models.aliases]\n\"live-fast\" = { models = [\"gemini-2.5-flash\", \"gemini-2.0-flash\"] }\n",
        )
    })
    .await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, "live-fast").await;
    assert_eq!(
        one_turn(&mut ws, "hi").await,
        default_text("gemini-2.0-flash", &keys[0])
    );
    let sessions = fake.live_sessions();
    let models: Vec<_> = sessions.iter().map(|s| s.model.clone()).collect();
    assert_eq!(
        models,
        vec![
            Some(MODEL.to_string()),
            Some("gemini-2.0-flash".to_string())
        ]
    );
    // The setup went out naming the real model, the rest of it untouched.
    assert_eq!(
        sessions[1].messages[0]["setup"]["model"],
        "models/gemini-2.0-flash"
    );
    assert_eq!(
        sessions[1].messages[0]["setup"]["generationConfig"]["responseModalities"],
        json!(["TEXT"])
    );
}

#[tokio::test]
async fn with_an_outbound_proxy_live_is_refused_not_sent_around_it() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| {
        c.set("upstream", r#"proxy = "http://127.0.0.1:9""#)
    })
    .await;
    match dial(&proxy, PATH, &[("x-goog-api-key", TEST_TOKEN)]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 501);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON");
            assert_eq!(body["error"]["status"], "UNIMPLEMENTED", "{body}");
        }
        other => panic!("expected a 501, got {:?}", other.map(|_| "a session")),
    }
    assert!(fake.live_sessions().is_empty());
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_google_back() {
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| c).await;
    let mut ws = open(&proxy).await;
    set_up(&mut ws, MODEL).await;
    // 2,000 messages of 64 KiB (125 MiB) while the client reads nothing.
    ws.send(turn("flood:2000")).await.expect("send");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = fake.live_sessions()[0].sent;
    // Socket buffers and one message in flight per side hold a few MiB, not the flood.
    assert!(
        stalled < 400,
        "{stalled} messages left the fake with no reader"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fake.live_sessions()[0].sent < stalled + 20,
        "the fake kept sending"
    );
    // Reading again lets it all through, in order and whole.
    let mut received = 0;
    while received < 2000 {
        let m = next(&mut ws).await.expect("a flood message");
        let text = m
            .pointer("/serverContent/modelTurn/parts/0/text")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert_eq!(text.len(), 64 * 1024);
        received += 1;
    }
    assert_eq!(fake.live_sessions()[0].sent, 2000);
}

/// What a client's messages hold while tungstenite reads them counts against
/// `server.memory_budget`, shared with request bodies: a client trickling a large frame holds
/// its bytes, another session's message beyond the budget ends that session (no answer), and
/// the budget is whole again once the first client leaves.
#[tokio::test]
async fn a_sessions_unread_messages_count_against_the_memory_budget() {
    use tokio::io::AsyncWriteExt;
    let keys = fake_keys(1);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| {
        c.set("server", r#"max_body = "1MiB""#)
            .set("server", r#"memory_budget = "64KiB""#)
    })
    .await;

    // A: a binary frame announcing 100 KiB, of which 60 KiB are sent, the rest never.
    let mut hog = open(&proxy).await;
    set_up(&mut hog, MODEL).await;
    let mut frame = vec![0x82u8, 0x80 | 127];
    frame.extend_from_slice(&(100u64 << 10).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]); // the mask: zero, so the payload goes as it is
    frame.extend(std::iter::repeat_n(b'x', 60 << 10));
    match hog.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.write_all(&frame)
                .await
                .expect("write the partial frame");
            tcp.flush().await.expect("flush");
        }
        _ => panic!("a plain connection"),
    }
    // B: a 20 KiB turn does not fit beside A's 60 KiB: B's session ends unanswered.
    let mut late = open(&proxy).await;
    set_up(&mut late, MODEL).await;
    let mut refused = false;
    for _ in 0..50 {
        // A's bytes reach the proxy's reader in pieces: retry (bounded) until they are held.
        let _ = late.send(turn(&"y".repeat(20 << 10))).await;
        match next(&mut late).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(answer) => {
                assert!(answer.get("serverContent").is_some(), "{answer}");
                let _ = next(&mut late).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(refused, "a message beyond the memory budget was read");
    // A leaves: its bytes are given back, and a new session's 20 KiB turn is answered.
    drop(hog);
    let mut answered = false;
    for _ in 0..100 {
        let mut ws = open(&proxy).await;
        set_up(&mut ws, MODEL).await;
        let _ = ws.send(turn(&"z".repeat(20 << 10))).await;
        if next(&mut ws)
            .await
            .is_ok_and(|a| a.get("serverContent").is_some())
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered,
        "the budget was not given back when the client left"
    );
}
