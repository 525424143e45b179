//! The upstream connection (issue #19): reloads that leave `[upstream]` alone keep the warm
//! connections, and no call waits for an HTTP/2 stream slot behind the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS. Every wait is bounded.

mod support;

use std::time::Duration;

use support::*;

const FLASH: &str = "gemini-2.5-flash";
const WAIT: Duration = Duration::from_secs(10);

fn one_worker(fake: &FakeGemini, keys: &[String]) -> TestConfig {
    config_for(&fake.url(), keys)
        .set("models", r#"list = "static""#)
        .set("server", "workers = 1")
        .set("server", r#"reload_poll = "0s""#)
}

/// Rewrites the config and applies it through the admin endpoint (an explicit reload).
async fn reload_with(proxy: &Proxy, config: &TestConfig) {
    proxy.write_file("config.toml", &config.render());
    let reply = proxy.post("/admin/reload").send().await.expect("reload");
    assert_eq!(reply.status().as_u16(), 200, "{}", proxy.logs());
    let body: serde_json::Value = reply.json().await.unwrap_or_default();
    assert_eq!(body["ok"], true, "{body}");
}

#[tokio::test]
async fn a_pool_only_reload_keeps_the_upstream_connection_and_an_upstream_change_rebuilds() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    let config = one_worker(&fake, &keys);
    let proxy = Proxy::builder().config(config.clone()).start().await;
    for _ in 0..3 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    let warm = fake.connections();
    assert_eq!(warm, 1, "sequential calls share one kept-alive connection");

    // [pool] only: a key added, another cooldown.
    let keys3 = fake_keys(3);
    let pool_edit = one_worker(&fake, &keys3).set("pool", r#"cooldown = "90s""#);
    reload_with(&proxy, &pool_edit).await;
    for _ in 0..4 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    assert_eq!(
        fake.connections(),
        warm,
        "a reload of [pool] opened new upstream connections"
    );
    assert!(fake.total_hits() >= 7);

    // [upstream] changed: new clients, so a new connection.
    let upstream_edit = pool_edit.set("upstream", r#"first_byte_timeout = "120s""#);
    reload_with(&proxy, &upstream_edit).await;
    assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    assert_eq!(
        fake.connections(),
        warm + 1,
        "an [upstream] change must rebuild the clients"
    );
    // Log lines reach the test through a writer thread and a pipe: wait for it (bounded).
    assert!(
        proxy
            .wait_for_log("upstream settings changed", Duration::from_secs(5))
            .await,
        "{}",
        proxy.logs()
    );
}

/// A kept-alive connection the upstream closed while it sat idle is not used again: each call
/// after it goes out on a fresh connection, first time, on the first key (the fake sees one
/// request per call: no failure, no retry on another key).
#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    let fake = FakeGemini::builder()
        .close_after_answer(Duration::from_millis(20))
        .start()
        .await;
    let keys = fake_keys(2);
    let proxy = Proxy::builder()
        .config(one_worker(&fake, &keys))
        .start()
        .await;
    for call in 1..=4 {
        assert_eq!(
            chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
            200,
            "call {call}: {}",
            proxy.logs()
        );
        assert_eq!(fake.total_hits(), call, "call {call} was retried");
        assert_eq!(
            fake.connections(),
            call,
            "call {call} reused a closed connection"
        );
        // The fake drops the connection 20 ms after its answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The control: an HTTP/2 client (prior knowledge, one connection) against the capped fake
/// gets at most 10 calls in flight; the rest wait for a stream. This is the cap the proxy must
/// not be subject to.
#[tokio::test]
async fn the_h2_fake_caps_an_http2_client_at_ten_streams() {
    let fake = FakeGemini::builder().http2(10).start().await;
    fake.on_any().always(Reply::delay(
        Duration::from_millis(400),
        Reply::text("slow"),
    ));
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let url = format!("{}/v1beta/models/{FLASH}:generateContent", fake.url());
    let key = fake_key(1);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let request = client
                .post(&url)
                .header("x-goog-api-key", &key)
                .json(&serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    assert!(fake.wait_for(|f| f.in_flight() >= 10, WAIT).await);
    assert!(
        !fake
            .wait_for(|f| f.in_flight() > 10, Duration::from_secs(1))
            .await,
        "the fake let more than 10 streams run at once"
    );
    for call in calls {
        assert_eq!(call.await.expect("task").expect("h2 call"), 200);
    }
    assert_eq!(fake.http2_requests(), 50, "the control spoke HTTP/2");
    assert_eq!(fake.connections(), 1);
}

/// 50 slow calls through one worker against an h2-capable fake capped at 10 streams: all 50
/// reach the fake at once (one HTTP/1.1 connection each), and all succeed (no call is timed
/// out waiting for a stream and blamed on a key).
#[tokio::test]
async fn fifty_slow_calls_through_one_worker_all_start_at_once() {
    let fake = FakeGemini::builder().http2(10).start().await;
    fake.on_any()
        .always(Reply::delay(Duration::from_secs(3), Reply::text("slow")));
    let keys = fake_keys(2);
    let proxy = Proxy::builder()
        .config(one_worker(&fake, &keys).set("upstream", r#"first_byte_timeout = "60s""#))
        .start()
        .await;
    let url = proxy.url();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(TEST_TOKEN)
                    .json(&serde_json::json!({
                        "model": FLASH,
                        "messages": [{"role": "user", "content": "hi"}]
                    }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    assert!(
        fake.wait_for(|f| f.in_flight() == 50, WAIT).await,
        "only {} of 50 calls reached the fake at once\n{}",
        fake.in_flight(),
        proxy.logs()
    );
    for call in calls {
        assert_eq!(call.await.expect("task"), 200);
    }
    assert_eq!(fake.total_hits(), 50, "no call was retried on another key");
    assert_eq!(
        fake.http2_requests(),
        0,
        "the proxy speaks HTTP/1.1 upstream"
    );
    let status: serde_json::Value = proxy
        .get("/status")
        .send()
        .await
        .expect("status")
        .json()
        .await
        .unwrap_or_default();
    let keys = status["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(keys.len(), 2, "{status}");
    for key in keys {
        assert_eq!(key["isAvailable"], true, "{status}");
    }
}

/// A plain HTTP forward proxy on loopback: it relays each connection's bytes to `target` as
/// they are (the fake reads the absolute-form request lines an HTTP proxy receives) and keeps
/// every request line it saw.
async fn forward_proxy(
    target: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.split();
                let (mut server_rx, mut server_tx) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        for line in text.lines() {
                            if line.starts_with("POST ") || line.starts_with("GET ") {
                                log.lock().expect("log").push(line.to_string());
                            }
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_tx.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                    let _ = client_tx.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, seen)
}

/// `[upstream] proxy` (reqwest's transport, beside the direct hyper-util one): every call, a
/// plain one and a stream, goes through the configured proxy, with the key in the header only.
#[tokio::test]
async fn calls_go_through_the_configured_outbound_proxy() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    let target: std::net::SocketAddr = fake
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the fake's address");
    let (proxy_addr, seen) = forward_proxy(target).await;
    let config =
        one_worker(&fake, &keys).set("upstream", &format!(r#"proxy = "http://{proxy_addr}""#));
    let proxy = Proxy::builder().config(config).start().await;
    for _ in 0..3 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    let streamed = proxy
        .post(&format!(
            "/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
        ))
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("stream");
    assert_eq!(streamed.status().as_u16(), 200);
    let text = tokio::time::timeout(WAIT, streamed.text())
        .await
        .expect("the stream ends in time")
        .expect("body");
    assert!(text.contains("data: "), "{text}");
    let lines = seen.lock().expect("log").clone();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("http://{target}/v1beta/models/{FLASH}:"))),
        "absolute-form requests to the base URL through the proxy: {lines:?}"
    );
    assert!(lines
        .iter()
        .all(|l| !keys.iter().any(|k| l.contains(k.as_str()))));
    assert_eq!(fake.total_hits(), 4);
}
