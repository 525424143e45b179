//! Gemini 3 thought signatures, remembered by tool-call id.
//!
//! Gemini 3 rejects a replayed tool call whose `thoughtSignature` is missing, and most OpenAI
//! clients drop the `extra_content` field that carries it. So the proxy keeps the signatures it
//! handed out and puts them back when the client replays the call. Memory is bounded: the
//! oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use crate::outbox::{Event, Outbox};

/// Signatures are kilobytes at most; this bounds the cache to a few tens of MiB.
const CAPACITY: usize = 8192;

#[derive(Default)]
pub struct SignatureCache {
    inner: Mutex<Inner>,
    /// New signatures go to a shared store (when one listens), so every replica has them.
    outbox: Outbox,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl SignatureCache {
    pub fn get(&self, tool_call_id: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.map.get(tool_call_id).cloned()
    }

    /// A cache whose new signatures are also told to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        SignatureCache {
            outbox,
            ..SignatureCache::default()
        }
    }

    pub fn remember(&self, pairs: Vec<(String, String)>) {
        if pairs.is_empty() {
            return;
        }
        if self.outbox.listening() {
            self.outbox.send(Event::Signatures(pairs.clone()));
        }
        self.remember_remote(pairs);
    }

    /// Signatures another replica handed out (not told to the store again).
    pub fn remember_remote(&self, pairs: Vec<(String, String)>) {
        if pairs.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, signature) in pairs {
            if inner.map.insert(id.clone(), signature).is_none() {
                inner.order.push_back(id);
            }
            while inner.order.len() > CAPACITY {
                if let Some(old) = inner.order.pop_front() {
                    inner.map.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets_the_oldest() {
        let cache = SignatureCache::default();
        cache.remember(vec![("call_a".into(), "sig-a".into())]);
        assert_eq!(cache.get("call_a").as_deref(), Some("sig-a"));
        cache.remember(
            (0..CAPACITY)
                .map(|i| (format!("c{i}"), "s".to_string()))
                .collect(),
        );
        assert_eq!(cache.get("call_a"), None);
        assert_eq!(
            cache.get(&format!("c{}", CAPACITY - 1)).as_deref(),
            Some("s")
        );
    }
}
