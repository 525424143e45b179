//! gemini-rotator: one endpoint in front of many Gemini API keys.
//!
//! A request travels one way through these modules:
//!
//! - [`server`]: accepts connections (hyper, HTTP/1.1), header timeout, body limit, graceful
//!   shutdown.
//! - [`access`]: client IP (through trusted proxies), IP allow/deny, bearer token to `Caller`,
//!   admin gate.
//! - [`router`]: `(method, path)` to a `Route`, each with its `Dialect` (OpenAI or Google).
//! - [`api`]: thin handlers per route: read the body, parse, resolve aliases.
//! - [`translate`]: pure OpenAI <-> Gemini mapping (no I/O, no clock).
//! - [`proxy`]: the attempt loop: pick a key, send, classify, report, retry before the first byte.
//! - [`pool`]: per (key, model) health and key selection; [`classify`] turns Google responses
//!   into pool outcomes.
//! - [`upstream`]: the reqwest client and the Gemini URLs.
//! - [`error`]: every `ProxyError` becomes an HTTP response here, in the caller's dialect.
//!
//! Around them: [`config`] (TOML to validated types), [`state`] (the live snapshot behind an
//! `ArcSwap`), [`secret`] (masked key and token types), [`sse`] (stream framing),
//! [`logging`] (tracing setup).
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod classify;
pub mod config;
pub mod error;
pub mod logging;
pub mod pool;
pub mod proxy;
pub mod router;
pub mod secret;
pub mod server;
pub mod sse;
pub mod state;
pub mod translate;
pub mod upstream;
