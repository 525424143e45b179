//! The attempt loop: pick a key, send, classify, report, and try another key while the client
//! has received nothing yet.
//!
//! A request is retried on a different key (up to `pool.max_attempts`) for every outcome that is
//! not the client's fault; quota answers (429, a model-scoped 403) do not use up `max_attempts`
//! but stop at `pool.max_quota_hops`. Every retry must also start before `pool.request_deadline`
//! and fit the process-wide `retry_budget`; otherwise the request fails with its last error. A
//! call that may have reached Google (a timeout or a break after writing) is replayed only when
//! repeating it is free (model lists, `countTokens`) or `pool.retry_after_send` allows it, so a
//! generation is never run twice by default. A `countTokens` is not metered against its
//! model (`metered`): it takes any key allowed the model, resting or not, and rests none. Once a 2xx arrives the choice is final: buffered
//! bodies are read here and their usage is recorded, streams are handed back at their headers
//! and never retried after that; a stream's outcome is reported by the relay when it ends, not
//! here. This module never looks at Google's error details; it acts on the `Outcome` that
//! `classify` returns and on what `upstream::SendError` says was sent.
//!
//! A native call may prefer a key (`Native::prefer`: a file upload's group, see
//! `affinity::upload_group`): the first pick takes it when it can serve, else picks as usual;
//! a hint, never a pin.
//!
//! Three parts: `execute` (the loop), `Attempts` (the retry rules of one request) and
//! `attempt` (one exchange: send, read or hand over, classify, report, count).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::classify::classify;
use crate::error::ProxyError;
use crate::metrics;
use crate::pool::{Lease, NoKey, Now, Outcome, PoolView};
use crate::request_log::RequestLog;
use crate::retry_budget;
use crate::state::Snapshot;
use crate::upstream::{self, SendError};
use crate::usage;

/// Largest successful body read into memory (non-streaming answers, model lists).
const MAX_BUFFERED_BODY: usize = 64 * 1024 * 1024;

/// How a successful response is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Read whole before returning (retried if reading fails).
    Buffered,
    /// Returned at the headers; the caller relays the body.
    Streaming,
}

pub enum Payload {
    Full(Bytes),
    /// The answer's body, to relay.
    Stream(upstream::AnswerBody),
}

/// A successful upstream exchange.
pub struct Served {
    pub lease: Lease,
    pub status: StatusCode,
    pub content_type: Option<http::HeaderValue>,
    /// The upstream's response headers (the native passthrough forwards a few).
    pub headers: http::HeaderMap,
    pub body: Payload,
}

/// One upstream call to make, possibly several times.
pub struct Call<'a> {
    /// The upstream model whose health this call counts against; `None` for calls that are
    /// not about one model (listing models), which only learn whether a key is valid.
    pub model: Option<&'a str>,
    pub method: Method,
    /// `/v1beta/…`, with a query if any; never a key.
    pub path_and_query: &'a str,
    pub body: Option<Bytes>,
    pub delivery: Delivery,
    /// Only this key may serve: a resource pinned to the key that created it (`affinity`).
    pub pinned: Option<Pinned<'a>>,
    /// The native passthrough's extras (headers, a streamed body, no repeat).
    pub native: Option<Native>,
}

/// The key a named resource lives on, by its index in the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    pub index: usize,
    /// The resource, for the client's error when that key cannot serve.
    pub resource: &'a str,
}

/// What a native passthrough call sends besides a JSON body.
pub struct Native {
    /// The client's headers that travel (content type, the upload protocol's), never a
    /// credential.
    pub headers: http::HeaderMap,
    /// The client's body, streamed upstream once (an upload).
    pub stream: std::sync::Mutex<Option<crate::body::Streamed>>,
    /// When it may go to another key after a failure.
    pub resend: Resend,
    /// A hint, never a pin: the key (its index) the first pick takes when it can serve (a
    /// file upload's group key, `affinity::upload_group`); when it cannot, the normal pick.
    pub prefer: Option<usize>,
}

/// When a native call may go to another key after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// As a generation: after Google's answer that it failed, or a failure before it was
    /// sent; after a failure that may have run there, only when free to repeat (`replayable`).
    AsGeneration,
    /// Only when Google certainly did not act on it: it refused the key or its quota, or the
    /// request never went out. A create, update or delete, which a repeat could do twice
    /// (`pool.retry_after_send` does not change that).
    IfRefused,
    /// Never: its body streamed upstream and is gone (an upload's bytes).
    Never,
}

impl Native {
    /// What went wrong on the client's side of a streamed body, if anything.
    pub fn fault(
        &self,
        fault: &std::sync::Mutex<Option<crate::body::BodyError>>,
    ) -> Option<crate::body::BodyError> {
        crate::body::Streamed::fault_of(fault)
    }
}

/// Why the last attempt failed.
struct Failure {
    outcome: Outcome,
    status: Option<StatusCode>,
    message: String,
    raw: Bytes,
    /// How far the request got when no answer came back; `None` when Google answered.
    sent: Option<SendError>,
}

impl Failure {
    /// The request may have run at Google (so a replay could be billed twice).
    fn maybe_processed(&self) -> bool {
        self.sent.as_ref().is_some_and(SendError::maybe_processed)
    }

    /// Google certainly did not act on the request: it never went out, or Google answered
    /// that the key or its quota may not run it.
    fn refused(&self) -> bool {
        match &self.sent {
            Some(sent) => !sent.maybe_processed(),
            None => is_quota(&self.outcome) || matches!(self.outcome, Outcome::KeyInvalid { .. }),
        }
    }
}

/// Why the attempt loop stopped before every allowed key was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// No untried key can serve, or `max_attempts` reached.
    Keys,
    /// `pool.max_quota_hops` quota answers in this request.
    QuotaHops,
    /// `pool.request_deadline` passed.
    Deadline,
    /// The process-wide retry budget is spent.
    Budget,
    /// The request may have run at Google and is not replayed (`pool.retry_after_send`).
    NotReplayed,
}

impl Stop {
    fn as_str(self) -> &'static str {
        match self {
            Stop::Keys => "keys",
            Stop::QuotaHops => "max_quota_hops",
            Stop::Deadline => "request_deadline",
            Stop::Budget => "retry_budget",
            Stop::NotReplayed => "not_replayed",
        }
    }
}

/// Whether `call` may be sent again on another key after it may have reached Google. Model
/// lists and gets (GET) and `countTokens` cost nothing and change nothing: always. Generations
/// (`generateContent`, `streamGenerateContent`, the chat path) and embeddings are billed per
/// call: only when the operator opted in with `pool.retry_after_send`.
fn replayable(call: &Call<'_>, retry_after_send: bool) -> bool {
    if retry_after_send || call.method == Method::GET {
        return true;
    }
    counts_tokens(call)
}

/// A `countTokens` call: free, and metered by Google apart from the model's generations.
fn counts_tokens(call: &Call<'_>) -> bool {
    let path = call.path_and_query.split('?').next().unwrap_or("");
    path.rsplit_once(':')
        .is_some_and(|(_, action)| action == "countTokens")
}

/// Whether `call` counts against its model's health and quota: a call about a model, but not
/// a `countTokens`, which is served while the model's generation quota rests and whose own
/// 429 rests nothing (the request moves on to another key).
fn metered(call: &Call<'_>) -> bool {
    call.model.is_some() && !counts_tokens(call)
}

/// The key `call` prefers (`Native::prefer`), when it names one of the pool's and is not
/// pinned (a pin leaves no choice to prefer in).
fn preferred(call: &Call<'_>, keys: usize) -> Option<usize> {
    if call.pinned.is_some() {
        return None;
    }
    call.native
        .as_ref()
        .and_then(|n| n.prefer)
        .filter(|&i| i < keys)
}

/// The exclusion list that leaves only key `index` to pick (none once it was `tried`): a
/// pinned call's, and a preferred key's first pick.
fn all_but(keys: usize, index: usize, tried: &[usize]) -> Vec<usize> {
    (0..keys)
        .filter(|&i| i != index || tried.contains(&i))
        .collect()
}

/// Runs `call` on the pool's keys until one answers or the retry rules say stop.
pub async fn execute(
    snap: &Snapshot,
    call: Call<'_>,
    log: &mut RequestLog,
) -> Result<Served, ProxyError> {
    let pool = &snap.pool;
    let model_name = call.model.unwrap_or("any");
    let mut attempts = Attempts::new(snap, &call);
    let mut last: Option<Failure> = None;
    let stop = loop {
        if let Err(stop) = attempts.may_start() {
            break stop;
        }
        let only_pinned: Vec<usize>;
        let exclude: &[usize] = match call.pinned {
            Some(pin) => {
                only_pinned = all_but(pool.len(), pin.index, &attempts.tried);
                &only_pinned
            }
            None => &attempts.tried,
        };
        let pick = |exclude: &[usize]| match call.model {
            Some(model) if !metered(&call) => pool.pick_unmetered(model, Instant::now(), exclude),
            Some(model) => pool.pick(model, Instant::now(), exclude),
            None => pool.pick_any(Instant::now(), exclude),
        };
        // The preferred key, on the first pick only: every other key excluded; if it cannot
        // serve (disabled, resting for the model, out of its day), the normal pick.
        let first_choice = match (preferred(&call, pool.len()), attempts.tried.is_empty()) {
            (Some(index), true) => pick(&all_but(pool.len(), index, &attempts.tried)).ok(),
            _ => None,
        };
        let picked = match first_choice {
            Some(lease) => Ok(lease),
            None => pick(exclude),
        };
        let lease = match picked {
            Ok(lease) => lease,
            Err(no_key) => match (&last, call.pinned) {
                (None, Some(pin)) => return Err(pinned_error(pool, pin, call.model)),
                (None, None) => return Err(no_key_error(model_name, &no_key, pool.len())),
                // Keys remain, but none that we have not tried: report the last failure.
                (Some(_), _) => break Stop::Keys,
            },
        };
        if !pool
            .claim(&lease, Now::new(Instant::now(), SystemTime::now()))
            .await
        {
            // The fleet used this key's daily_limit up: another key, no attempt spent.
            attempts.tried.push(lease.index);
            continue;
        }
        attempts.started(lease.index);
        let failure = match attempt(snap, &call, lease, log).await {
            Ok(served) => return Ok(served),
            Err(failure) => failure,
        };
        if !failure.outcome.retryable() {
            return Err(ProxyError::UpstreamClient {
                status: failure.status.unwrap_or(StatusCode::BAD_REQUEST),
                message: failure.message,
                raw: failure.raw,
            });
        }
        let next = attempts.after(&failure);
        let overloaded = failure.outcome == Outcome::Overloaded;
        last = Some(failure);
        if let Some(stop) = next {
            break stop;
        }
        if overloaded {
            // Other keys add no capacity to an overloaded model: give it a moment.
            let pause = 100 * attempts.tried.len() as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    };

    let Some(last) = last else {
        return Err(ProxyError::Internal("no attempt was made".into()));
    };
    if stop != Stop::Keys {
        tracing::debug!(
            model = model_name,
            attempts = attempts.tried.len(),
            stop = stop.as_str(),
            "no further attempt"
        );
    }
    if let (Some(pin), true) = (call.pinned, is_quota(&last.outcome)) {
        // The one key the resource lives on is out for now: say so, and until when.
        return Err(pinned_error(pool, pin, call.model));
    }
    Err(exhausted(snap, model_name, last, attempts.tried.len()))
}

/// The retry rules of one request: which keys it tried, how many attempts and quota hops it
/// used, its deadline, and the process-wide budget every retry must fit.
struct Attempts {
    tried: Vec<usize>,
    /// Attempts that used up `max_attempts` (quota answers do not).
    counted: usize,
    quota_hops: usize,
    max_attempts: usize,
    max_quota_hops: usize,
    /// Set at the first attempt: no retry starts after it.
    deadline: Option<Instant>,
    request_deadline: Duration,
    /// Whether a call that may have reached Google may be sent again.
    replay: bool,
    /// When a failed attempt may be sent again (`Native::resend`; generations' rules else).
    resend: Resend,
    budget: &'static retry_budget::RetryBudget,
}

impl Attempts {
    fn new(snap: &Snapshot, call: &Call<'_>) -> Self {
        let policy = &snap.config.pool.retry;
        let max_attempts = snap.pool.max_attempts().max(1) as usize;
        Attempts {
            tried: Vec::with_capacity(max_attempts),
            counted: 0,
            quota_hops: 0,
            max_attempts,
            max_quota_hops: policy.max_quota_hops.max(1) as usize,
            deadline: None,
            request_deadline: policy.request_deadline,
            replay: replayable(call, policy.retry_after_send),
            resend: call
                .native
                .as_ref()
                .map_or(Resend::AsGeneration, |n| n.resend),
            budget: retry_budget::global(),
        }
    }

    /// Whether another attempt may start: the first always does; a retry must fit the
    /// request's deadline and the process's budget.
    fn may_start(&self) -> Result<(), Stop> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(Stop::Deadline);
        }
        if !self.budget.try_retry(now) {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    /// An attempt on key `index` is about to be sent.
    fn started(&mut self, index: usize) {
        if self.deadline.is_none() {
            let now = Instant::now();
            self.deadline = Some(now + self.request_deadline);
            self.budget.record_first(now);
        }
        self.tried.push(index);
    }

    /// After a retryable failure: why to stop, if the rules say so. Quota answers do not use
    /// up `max_attempts` (the key now rests, so trying a fresh one costs one call per key per
    /// cooldown, and a client is not refused while a key could serve) but stop at
    /// `max_quota_hops`, so one request never walks a large pool. Google's own error answers
    /// (429, 5xx) say the call failed, and failed calls are not billed, so another key may run
    /// it; a call that may be running at Google is not repeated unless it is free to repeat or
    /// the operator said so. A create goes elsewhere only when Google refused it.
    fn after(&mut self, failure: &Failure) -> Option<Stop> {
        let again = match self.resend {
            Resend::AsGeneration => !failure.maybe_processed() || self.replay,
            Resend::IfRefused => failure.refused(),
            Resend::Never => false,
        };
        if !again {
            return Some(Stop::NotReplayed);
        }
        if is_quota(&failure.outcome) {
            self.quota_hops += 1;
            (self.quota_hops >= self.max_quota_hops).then_some(Stop::QuotaHops)
        } else {
            self.counted += 1;
            (self.counted >= self.max_attempts).then_some(Stop::Keys)
        }
    }
}

/// One exchange with Google on `lease`: the answer when it is a success (a buffered body read
/// whole and its usage recorded; a stream handed over at its headers, for the relay to judge
/// at its end), else the failure, already reported to the pool and the metrics.
async fn attempt(
    snap: &Snapshot,
    call: &Call<'_>,
    lease: Lease,
    log: &mut RequestLog,
) -> Result<Served, Failure> {
    let pool = &snap.pool;
    let model_name = call.model.unwrap_or("any");
    // If this future is dropped (the client left) before an outcome is reported, the guard
    // hands the lease back so a probing key is not held for nothing.
    let mut guard = Unreported::new(pool, &lease);
    log.attempts += 1;
    log.key = Some(lease.key.masked().clone());

    let sent_at = Instant::now();
    let mut fault = None;
    let sent = match &call.native {
        None => {
            snap.upstream
                .send(
                    log.worker,
                    call.method.clone(),
                    call.path_and_query,
                    &lease.key,
                    call.body.clone(),
                )
                .await
        }
        Some(native) => {
            let streamed = native
                .stream
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let outgoing = match (streamed, &call.body) {
                (Some(streamed), _) => {
                    fault = Some(streamed.fault.clone());
                    upstream::Outgoing::Stream {
                        body: streamed.stream,
                        sent: streamed.sent,
                    }
                }
                (None, Some(bytes)) => upstream::Outgoing::Bytes(bytes.clone()),
                (None, None) => upstream::Outgoing::Empty,
            };
            snap.upstream
                .send_native(
                    log.worker,
                    call.method.clone(),
                    call.path_and_query,
                    &lease.key,
                    &native.headers,
                    outgoing,
                )
                .await
        }
    };
    // A streamed body the client broke (too large, stalled, cut) says nothing about the key.
    let client_fault = fault
        .as_ref()
        .and_then(|f| crate::body::Streamed::fault_of(f))
        .is_some();
    let sent = match sent {
        Err(e) if client_fault => Err(SendError::NotSent(format!("the client's body failed: {e}"))),
        other => other,
    };
    let ttfb = sent.is_ok().then(|| sent_at.elapsed());
    let failure = match sent {
        Ok(response) if response.status().is_success() => {
            let (parts, body) = response.into_parts();
            let status = parts.status;
            log.upstream_status = Some(status.as_u16());
            let content_type = parts.headers.get(http::header::CONTENT_TYPE).cloned();
            let headers = parts.headers;
            let read = match call.delivery {
                Delivery::Streaming => {
                    // Judged at its end: the relay reports the lease's outcome.
                    pool.answered(&lease);
                    metrics::record_attempt(model_name, "ok", ttfb);
                    guard.reported();
                    return Ok(Served {
                        lease,
                        status,
                        content_type,
                        headers,
                        body: Payload::Stream(body),
                    });
                }
                Delivery::Buffered => {
                    upstream::read_answer(body, snap.upstream.idle_timeout, MAX_BUFFERED_BODY).await
                }
            };
            match read {
                Ok(bytes) => {
                    report(pool, call, &lease, &Outcome::Success);
                    metrics::record_attempt(model_name, "ok", ttfb);
                    guard.reported();
                    if metered(call) {
                        let tokens = usage::from_json(&bytes);
                        snap.record_usage(&lease, log.token.as_deref(), tokens);
                    }
                    return Ok(Served {
                        lease,
                        status,
                        content_type,
                        headers,
                        body: Payload::Full(bytes),
                    });
                }
                Err(e) => send_failure(e),
            }
        }
        Ok(response) => {
            let status = response.status();
            log.upstream_status = Some(status.as_u16());
            let raw =
                upstream::read_error_body(response.into_body(), snap.upstream.idle_timeout).await;
            let outcome = if call.pinned.is_some() {
                // Another project's view of a pinned resource is never the key's fault.
                crate::classify::classify_pinned(status.as_u16(), &raw)
            } else {
                classify(status.as_u16(), &raw)
            };
            Failure {
                message: google_message(&raw)
                    .unwrap_or_else(|| format!("upstream answered {status}")),
                status: Some(status),
                outcome,
                raw,
                sent: None,
            }
        }
        Err(e) => send_failure(e),
    };

    // Reported first: a model name the answer confirmed gets its metrics label.
    report(pool, call, &lease, &failure.outcome);
    metrics::record_attempt(model_name, failure.outcome.class(), ttfb);
    guard.reported();
    tracing::debug!(
        key = %lease.key,
        model = model_name,
        outcome = failure.outcome.class(),
        attempt = log.attempts,
        "upstream attempt failed"
    );
    Err(failure)
}

/// Answers that take the key out for the model (not for good): the request hops to another
/// key without using up `max_attempts`, up to `max_quota_hops`.
fn is_quota(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::RateLimited { .. }
            | Outcome::QuotaDaily
            | Outcome::NoQuota
            | Outcome::ModelDenied { .. }
    )
}

/// Applies an outcome to the key. A call about no model, or not metered (`metered`), only
/// teaches whether the key is valid.
fn report(pool: &PoolView, call: &Call<'_>, lease: &Lease, outcome: &Outcome) {
    if metered(call) || matches!(outcome, Outcome::KeyInvalid { .. }) {
        pool.report(lease, outcome, Instant::now());
    } else {
        pool.abandon(lease);
    }
}

/// Abandons a lease on drop unless an outcome was reported first.
struct Unreported<'a> {
    pool: &'a PoolView,
    lease: Option<Lease>,
}

impl<'a> Unreported<'a> {
    fn new(pool: &'a PoolView, lease: &Lease) -> Self {
        Unreported {
            pool,
            lease: Some(lease.clone()),
        }
    }

    fn reported(&mut self) {
        self.lease = None;
    }
}

impl Drop for Unreported<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.pool.abandon(&lease);
        }
    }
}

/// An exchange without an answer: a failure before the request was written, or an answer too
/// big to hold, is nobody's fault (`Network`, which the pool ignores); a key no header can carry is the key's; the rest (a
/// timeout or a break after writing) counts towards `failure_threshold`.
fn send_failure(e: SendError) -> Failure {
    let reason = e.to_string();
    let outcome = match &e {
        // An answer too big to hold is not the key's doing either (it was processed, so
        // `maybe_processed` keeps a generation from being replayed).
        SendError::NotSent(_) | SendError::TooLarge { .. } => Outcome::Network {
            reason: reason.clone(),
        },
        SendError::BadKey => Outcome::KeyInvalid {
            reason: reason.clone(),
        },
        SendError::Timeout | SendError::Broken(_) => Outcome::Transient {
            reason: reason.clone(),
        },
    };
    Failure {
        outcome,
        status: None,
        message: reason,
        raw: Bytes::new(),
        sent: Some(e),
    }
}

/// The error for a request whose every attempt failed.
fn exhausted(snap: &Snapshot, model: &str, last: Failure, attempts: usize) -> ProxyError {
    let tried = if attempts == 1 {
        "1 key".to_string()
    } else {
        format!("{attempts} keys")
    };
    if is_quota(&last.outcome) {
        // Ask the pool when a key returns, as a fresh request would, without taking one: a
        // lease here would count a request against `daily_limit` and hold a probing key.
        return match snap.pool.peek(model, Now::at(Instant::now())) {
            // Every key is denied the model by Google: its own words say why.
            Err(_) if matches!(last.outcome, Outcome::ModelDenied { .. }) => {
                ProxyError::UpstreamClient {
                    status: last.status.unwrap_or(StatusCode::FORBIDDEN),
                    message: last.message,
                    raw: last.raw,
                }
            }
            Err(no_key) => no_key_error(model, &no_key, snap.pool.len()),
            Ok(()) => ProxyError::NoKey {
                message: format!(
                    "Gemini quota exhausted on every key tried for model '{model}' ({tried}); retry shortly"
                ),
                retry_after: Some(Duration::from_secs(1)),
                all_daily: false,
            },
        };
    }
    match (&last.outcome, &last.sent) {
        (Outcome::KeyInvalid { reason }, _) => ProxyError::UpstreamFailed {
            status: StatusCode::BAD_GATEWAY,
            message: format!(
                "Google rejected the API key ({tried} tried): {reason}. Check the keys in the pool."
            ),
            raw: last.raw,
        },
        (_, Some(SendError::Timeout)) => ProxyError::UpstreamTimeout,
        (_, Some(_)) => ProxyError::UpstreamFailed {
            status: StatusCode::BAD_GATEWAY,
            message: format!("{} ({tried} tried)", last.message),
            raw: Bytes::new(),
        },
        _ => ProxyError::UpstreamFailed {
            status: last
                .status
                .filter(|s| s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            message: format!("{} ({tried} tried)", last.message),
            raw: last.raw,
        },
    }
}

/// The client-facing error when the key a resource is pinned to cannot serve now: a 429
/// with `Retry-After` while it rests, else an error naming the resource. Read-only (`explain`
/// takes no lease); only reached when the pick found the key out.
fn pinned_error(pool: &PoolView, pin: Pinned<'_>, model: Option<&str>) -> ProxyError {
    use crate::pool::{Verdict, Why};
    let explained = pool.explain_at(model.unwrap_or(""), Now::at(Instant::now()));
    let verdict = explained.keys.get(pin.index).map(|k| k.verdict.clone());
    let elsewhere = |why: String| ProxyError::PinnedElsewhere {
        resource: pin.resource.to_string(),
        why,
    };
    match verdict {
        Some(Verdict::NotAllowed) => elsewhere(format!(
            "the key it lives on may not serve model '{}'",
            model.unwrap_or("any")
        )),
        Some(Verdict::Out(Why::Disabled { .. })) => {
            elsewhere("the key it lives on was rejected by Google and is disabled".into())
        }
        Some(Verdict::Out(Why::NoQuota { .. })) => elsewhere(format!(
            "the key it lives on has no quota for model '{}'",
            model.unwrap_or("any")
        )),
        None => elsewhere("the key it lives on is no longer in the pool".into()),
        Some(other) => ProxyError::PinnedResting {
            resource: pin.resource.to_string(),
            retry_after: other.left().unwrap_or(Duration::from_secs(1)),
        },
    }
}

/// The client-facing error when no key can serve `model`.
pub fn no_key_error(model: &str, why: &NoKey, pool_size: usize) -> ProxyError {
    if why.none_allowed {
        return ProxyError::ModelNotFound {
            model: model.to_string(),
        };
    }
    if why.all_disabled {
        return ProxyError::NoKey {
            message: format!(
                "every key that can serve model '{model}' was rejected by Google as invalid ({pool_size} keys in the pool); fix the keys and reload"
            ),
            retry_after: None,
            all_daily: false,
        };
    }
    let wait = why.retry_after.unwrap_or(Duration::from_secs(1));
    let message = if why.all_daily {
        format!("every key for model '{model}' has used its daily quota; quotas reset at midnight Pacific time")
    } else {
        format!(
            "every key for model '{model}' is rate-limited; the first returns in {}s",
            wait.as_secs_f64().ceil() as u64
        )
    };
    ProxyError::NoKey {
        message,
        retry_after: Some(wait),
        all_daily: why.all_daily,
    }
}

/// `error.message` from a Google error body (object or array form).
pub fn google_message(raw: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let error = match &value {
        serde_json::Value::Array(items) => items.first()?.get("error")?,
        other => other.get("error")?,
    };
    error.get("message")?.as_str().map(str::to_string)
}
