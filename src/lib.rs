//! gemini-rotator: one endpoint in front of many Gemini API keys.
//!
//! A request travels one way through these modules:
//!
//! - [`server`]: worker threads (one single-threaded runtime each), accepts connections
//!   (hyper, HTTP/1.1), header, body and write timeouts, body limit, graceful shutdown;
//!   [`admission`] bounds connections, requests in flight and the bytes bodies and images hold.
//! - [`access`]: client IP (through trusted proxies), IP allow/deny, bearer token to `Caller`,
//!   admin gate; [`lockout`] slows addresses that keep presenting wrong tokens.
//! - [`router`]: `(method, path)` to a `Route`, each with its `Dialect` (OpenAI or Google).
//! - [`api`]: thin handlers per route: read the body, parse, resolve aliases.
//! - [`translate`]: pure OpenAI <-> Gemini mapping (no I/O, no clock); [`media`] fetches the
//!   image URLs a request names before it is translated.
//! - [`proxy`]: the attempt loop: pick a key, send, classify, report, retry before the first byte
//!   (bounded by [`retry_budget`], the process-wide cap on extra upstream calls).
//! - [`pool`]: per (key, model) health and key selection; [`classify`] turns Google responses
//!   into pool outcomes.
//! - [`upstream`]: the HTTP/1.1 client per worker (hyper-util's, or reqwest's through a proxy)
//!   and the Gemini URLs.
//! - [`error`]: every `ProxyError` becomes an HTTP response here, in the caller's dialect;
//!   what a client sent is quoted in it (and in logs) only as an [`excerpt`].
//!
//! Around them: [`config`] (TOML to validated types), [`state`] (the live snapshot behind an
//! `ArcSwap`), [`secret`] (masked key and token types), [`sse`] (stream framing), [`json_syntax`]
//! (the fast yes/no JSON check of a native body, simd-json),
//! [`usage`] (tokens per key, model and client token), [`store`] (that state kept across
//! restarts, `[state]`), [`logging`] (tracing setup),
//! [`dashboard`] (the operator's live page) and [`timeline`] (its per-minute traffic counts).
#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod affinity;
pub mod api;
pub mod body;
pub mod classify;
pub mod clock;
pub mod config;
pub mod cors;
pub mod dashboard;
pub mod error;
pub mod excerpt;
pub mod json_syntax;
pub mod lockout;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod models_cache;
pub mod outbox;
pub mod pool;
pub mod proxy;
pub mod quota_day;
pub mod relay;
pub mod reload;
pub mod reload_state;
pub mod request_log;
pub mod retry_budget;
pub mod router;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod shard;
pub mod signatures;
pub mod sse;
pub mod state;
pub mod store;
pub mod stored_responses;
pub mod timeline;
pub mod translate;
pub mod upstream;
pub mod usage;

use std::sync::Arc;

/// How the process should exit (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Clean = 0,
    BadConfig = 1,
    CannotBind = 2,
}

/// Serves with a loaded config until SIGTERM/SIGINT. Logging must be initialised. The calling
/// runtime runs only the control tasks (signals, reload); requests are served on the worker
/// threads `server::serve_workers` starts.
pub async fn run(loaded: config::Loaded, log: Option<logging::LogHandle>) -> Exit {
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }
    let listen = loaded.config.server.listen.clone();
    let keys = loaded.config.pool.keys.len();
    let tokens = loaded.config.auth.tokens.len();
    let path = loaded.config.path.display().to_string();
    let app = match state::App::new(loaded.config, log) {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start with this config");
            return Exit::BadConfig;
        }
    };
    // Metrics label only the model names the pool knows to be real.
    metrics::follow_models(app.keys.known_models());
    let workers = app.snapshot().config.server.workers;
    let listeners = match server::bind(&listen, workers).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot bind");
            return Exit::CannotBind;
        }
    };
    let workers = listeners.len();
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(listen, |a| a.to_string());
    // Handlers and folder watches first: a supervisor may signal, and a test or an operator edit
    // the config, as soon as it reads "listening"; an uninstalled SIGHUP/SIGTERM handler means
    // the default action (killed, not a clean exit).
    let signals = Signals::install();
    let triggers = reload::Triggers::install(&app);
    tracing::info!(%addr, config = %path, keys, tokens, workers, "listening");

    tokio::spawn(watch_signals(app.clone(), signals));
    tokio::spawn(reload::watch(app.clone(), triggers));
    tokio::spawn(save_state(app.clone()));
    server::serve_workers(listeners, app.clone()).await;
    // The last snapshot of key health, after every request has reported.
    let saver = app.clone();
    if let Err(e) =
        tokio::task::spawn_blocking(move || saver.save_state(store::Why::Shutdown)).await
    {
        tracing::warn!(error = %e, "state: the final snapshot did not complete");
    }
    tracing::info!("shut down cleanly");
    Exit::Clean
}

/// Every `store::SAVE_EVERY`, the state store writes what changed (off the control runtime's
/// threads: it does file I/O).
async fn save_state(app: Arc<state::App>) {
    let mut tick = tokio::time::interval(store::SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let saver = app.clone();
        let _ = tokio::task::spawn_blocking(move || saver.save_state(store::Why::Periodic)).await;
    }
}

/// SIGTERM and SIGINT, registered with the OS when installed.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Signals {
                    streams: Some((term, int)),
                },
                _ => {
                    tracing::error!("cannot install signal handlers");
                    Signals { streams: None }
                }
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

/// SIGTERM/SIGINT begin a graceful shutdown.
async fn watch_signals(app: Arc<state::App>, signals: Signals) {
    #[cfg(unix)]
    {
        let Some((mut term, mut int)) = signals.streams else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = signals;
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt: shutting down");
    }
    app.lifecycle.begin_shutdown();
}
