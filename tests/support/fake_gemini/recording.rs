//! The bookkeeping tests assert on: every request as the fake saw it (`RecordedRequest`), hits
//! per key and model, keys seen in URLs, in-flight requests and cancellations (the `Flight`
//! guard), and `wait_for`, the bounded poll over any of them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use super::{lock, FakeGemini, Shared};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    pub raw_body: Bytes,
    /// The key used (header first, else `?key=`).
    pub key: Option<String>,
    /// The model in the path, without `models/`.
    pub model: Option<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
pub(super) struct Log {
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) hits: HashMap<(String, String), u64>,
}

impl FakeGemini {
    /// Requests that carried `key` for `model` (the list route counts under model "").
    pub fn hits(&self, key: &str, model: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .get(&(key.to_string(), model.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that carried `key`, any route.
    pub fn hits_for_key(&self, key: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests for `model`, any key.
    pub fn hits_for_model(&self, model: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .iter()
            .filter(|((_, m), _)| m == model)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request received, keyed or not.
    pub fn total_hits(&self) -> u64 {
        lock(&self.shared.log).requests.len() as u64
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.log).requests.last().cloned()
    }

    /// Requests whose client left before the fake finished replying.
    pub fn cancellations(&self) -> u64 {
        self.shared.cancellations.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (not reset by `reset_counters`).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests that arrived over HTTP/2 (h2c; see `FakeGeminiBuilder::http2`).
    pub fn http2_requests(&self) -> u64 {
        self.shared.http2_requests.load(Ordering::SeqCst)
    }

    /// Requests that carried `key=` in the query string (the proxy must never do this).
    pub fn keys_in_url(&self) -> u64 {
        self.shared.keys_in_url.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and counters (scripts stay).
    pub fn reset_counters(&self) {
        *lock(&self.shared.log) = Log::default();
        self.shared.cancellations.store(0, Ordering::SeqCst);
        self.shared.keys_in_url.store(0, Ordering::SeqCst);
    }

    /// Polls `cond` every 10 ms until it holds or `timeout` (wall clock, so a paused tokio clock
    /// cannot end it early) passes; returns whether it held.
    pub async fn wait_for(&self, cond: impl Fn(&FakeGemini) -> bool, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts one request in `in_flight`; counts a cancellation if dropped before `done`.
pub(super) struct Flight {
    shared: Arc<Shared>,
    pub(super) done: bool,
}

impl Flight {
    pub(super) fn new(shared: &Arc<Shared>) -> Flight {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        Flight {
            shared: shared.clone(),
            done: false,
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.shared.cancellations.fetch_add(1, Ordering::SeqCst);
        }
    }
}
