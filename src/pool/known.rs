//! The model names the proxy may keep state for. Model names come from clients, so a name earns
//! per-key health entries (and a metrics label) only once it is known to be real: it is in the
//! config (`models.list`, an alias target), Google listed it, or Google answered a request for
//! it with anything but the client's error (a junk name is answered 404 NOT_FOUND and never gets
//! here). Alias names are known too, as metrics labels only: the pool never sees them.
//!
//! Bounded: configured names are the operator's; listed and confirmed names beyond `MAX_SEEN`
//! are not added (they are still served, counted only where they already have state).

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use crate::config;

/// Listed and confirmed names kept; Google has a few hundred models at most.
const MAX_SEEN: usize = 1024;

#[derive(Debug, Default)]
pub struct KnownModels {
    /// From the last bound config; replaced whole on reload.
    configured: RwLock<Arc<Configured>>,
    /// Listed by Google or confirmed by an answer; only grows, up to `MAX_SEEN`.
    seen: RwLock<HashSet<Arc<str>>>,
}

#[derive(Debug, Default)]
struct Configured {
    models: HashSet<Arc<str>>,
    aliases: HashSet<Arc<str>>,
}

impl KnownModels {
    /// A real Gemini model name: configured, listed or confirmed.
    pub fn is_model(&self, name: &str) -> bool {
        read(&self.configured).models.contains(name) || read(&self.seen).contains(name)
    }

    /// A name worth a metrics label of its own: a known model or a configured alias.
    pub fn is_label(&self, name: &str) -> bool {
        self.is_model(name) || read(&self.configured).aliases.contains(name)
    }

    /// The config's names: the static model list, alias targets (models) and alias names.
    pub(super) fn configure(&self, models: &config::Models) {
        let mut c = Configured::default();
        if let config::ModelList::Static(list) = &models.list {
            c.models.extend(list.iter().map(|m| Arc::from(m.as_str())));
        }
        for (name, alias) in &models.aliases {
            c.aliases.insert(Arc::from(name.as_str()));
            c.models
                .extend(alias.models.iter().map(|m| Arc::from(m.as_str())));
        }
        *self
            .configured
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(c);
    }

    /// Google listed or answered for `name`. Returns whether it is known now.
    pub(super) fn learn(&self, name: &str) -> bool {
        if name.is_empty() {
            return false;
        }
        if self.is_model(name) {
            return true;
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_SEEN {
            return seen.contains(name);
        }
        seen.insert(Arc::from(name));
        true
    }

    /// Every known model name (one allocation for the list, none per name).
    pub(super) fn models(&self) -> Vec<Arc<str>> {
        let configured = read(&self.configured).clone();
        let seen = read(&self.seen);
        let mut out: Vec<Arc<str>> = configured.models.iter().cloned().collect();
        out.extend(
            seen.iter()
                .filter(|m| !configured.models.contains(&***m))
                .cloned(),
        );
        out
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
