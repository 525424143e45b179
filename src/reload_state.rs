//! What the config reloader remembers between attempts and shows to operators: the last
//! result (`/status`, the dashboard, the metric), a change that needs a restart, and the
//! content fingerprint that lets a hint with unchanged files do nothing. It lives on `App`;
//! the reloading itself is `reload`'s.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::Notify;

use crate::clock::rfc3339;
use crate::logging::LogHandle;

/// The last reload result, for `/status`.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub ok: bool,
    pub at: SystemTime,
    pub error: Option<String>,
}

/// Reload bookkeeping that lives in `App`.
pub struct ReloadState {
    /// Serialises reloads; holds what the last attempt saw.
    pub(crate) attempt: tokio::sync::Mutex<Memo>,
    pub(crate) last: Mutex<LastReload>,
    /// Set when a reload changed something that needs a restart (`server.listen`).
    pub(crate) restart_required: Mutex<Option<String>>,
    pub(crate) log: Option<LogHandle>,
    /// Woken when the files to watch may have changed.
    pub(crate) rewatch: Notify,
}

#[derive(Default)]
pub(crate) struct Memo {
    /// Content fingerprint of the files at the last attempt.
    pub(crate) fingerprint: Option<u64>,
    /// Whether the last attempt was rejected, and with what error (logged once).
    pub(crate) rejected: Option<String>,
}

impl ReloadState {
    pub fn new(log: Option<LogHandle>) -> Self {
        ReloadState {
            attempt: tokio::sync::Mutex::new(Memo::default()),
            last: Mutex::new(LastReload {
                ok: true,
                at: SystemTime::now(),
                error: None,
            }),
            restart_required: Mutex::new(None),
            log,
            rewatch: Notify::new(),
        }
    }

    pub fn last(&self) -> LastReload {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn restart_required(&self) -> Option<String> {
        self.restart_required
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_last(&self, ok: bool, error: Option<String>) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = LastReload {
            ok,
            at: SystemTime::now(),
            error,
        };
    }
}

impl ReloadState {
    /// `config.last_reload` for `/status` and the dashboard.
    pub fn last_json(&self) -> serde_json::Value {
        let last = self.last();
        json!({"ok": last.ok, "at": rfc3339(last.at), "error": last.error})
    }
}
