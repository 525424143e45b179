//! Stored Responses API responses (`store: true`): what `GET /v1/responses/{id}` returns and
//! what `previous_response_id` continues from.
//!
//! Bounded (entries and bytes: the oldest go first) and expiring (`TTL` after it was stored).
//! A response belongs to the client token that created it: another token is told it does not
//! exist. In memory; with a shared state store (`outbox`), responses up to `SHARE_MAX` are
//! also sent to it, and a replica that does not have one asks it (`state::App`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::outbox::{Event, Outbox};

/// How long a stored response is kept.
pub const TTL: Duration = Duration::from_secs(6 * 3600);
/// At most this many responses…
pub const MAX_ENTRIES: usize = 4096;
/// …and this many bytes of them (responses plus conversations).
pub const MAX_BYTES: usize = 128 * 1024 * 1024;

/// Responses larger than this stay on the replica that made them.
pub const SHARE_MAX: usize = 2 * 1024 * 1024;

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    /// The client token's name (`None`: an open proxy).
    pub owner: Option<String>,
    /// The `response` object JSON.
    pub response: Vec<u8>,
    /// The conversation up to and including this response's output, a JSON array of items.
    pub conversation: Vec<u8>,
}

impl Stored {
    fn size(&self) -> usize {
        self.response.len() + self.conversation.len() + 256
    }
}

struct Entry {
    stored: Arc<Stored>,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

pub struct StoredResponses {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    outbox: Outbox,
}

impl Default for StoredResponses {
    fn default() -> Self {
        StoredResponses::new(TTL, MAX_ENTRIES, MAX_BYTES)
    }
}

impl StoredResponses {
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        StoredResponses {
            inner: Mutex::default(),
            ttl,
            max_entries,
            max_bytes,
            outbox: Outbox::default(),
        }
    }

    /// The default bounds, with stored responses also told to `outbox`.
    pub fn shared(outbox: Outbox) -> Self {
        StoredResponses {
            outbox,
            ..StoredResponses::default()
        }
    }

    /// How long a response is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Stores `stored` under `id` (and tells a shared store); a response larger than the whole
    /// bound is not kept.
    pub fn put(&self, id: String, stored: Stored, now: Instant) {
        if self.outbox.listening() && stored.size() <= SHARE_MAX {
            self.outbox.send(Event::ResponseStored {
                id: id.clone(),
                owner: stored.owner.clone(),
                response: stored.response.clone(),
                conversation: stored.conversation.clone(),
            });
        }
        self.insert(id, stored, now);
    }

    /// Stores a response another replica made (not told to the store again).
    pub fn insert(&self, id: String, stored: Stored, now: Instant) {
        let size = stored.size();
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.map.remove(&id) {
            inner.bytes -= old.stored.size();
            inner.order.retain(|k| k != &id);
        }
        while inner.map.len() >= self.max_entries || inner.bytes + size > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.bytes -= gone.stored.size();
            }
        }
        inner.bytes += size;
        inner.order.push_back(id.clone());
        inner.map.insert(
            id,
            Entry {
                stored: Arc::new(stored),
                at: now,
            },
        );
    }

    /// The response `id` if `owner` created it and it has not expired.
    pub fn get(&self, id: &str, owner: Option<&str>, now: Instant) -> Option<Arc<Stored>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = inner.map.get(id)?;
        if now.duration_since(entry.at) > self.ttl {
            let size = entry.stored.size();
            inner.map.remove(id);
            inner.order.retain(|k| k != id);
            inner.bytes -= size;
            return None;
        }
        (entry.stored.owner.as_deref() == owner).then(|| entry.stored.clone())
    }

    /// Forgets `id` (another replica deleted it).
    pub fn forget(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gone) = inner.map.remove(id) {
            inner.bytes -= gone.stored.size();
            inner.order.retain(|k| k != id);
        }
    }

    /// Deletes `id` if `owner` may see it (on every replica, with a shared store); whether
    /// it was there.
    pub fn delete(&self, id: &str, owner: Option<&str>, now: Instant) -> bool {
        if self.get(id, owner, now).is_none() {
            return false;
        }
        self.outbox
            .send(Event::ResponseDeleted { id: id.to_string() });
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match inner.map.remove(id) {
            Some(gone) => {
                inner.bytes -= gone.stored.size();
                inner.order.retain(|k| k != id);
                true
            }
            None => false,
        }
    }
}

/// What a streamed response needs to be stored once it completes: its id, its owner and the
/// conversation before its output (history plus this turn's input).
#[derive(Debug)]
pub struct Ticket {
    pub id: String,
    pub owner: Option<String>,
    pub input: Vec<serde_json::Value>,
}

impl StoredResponses {
    /// Stores a completed response: `response` as `GET` returns it, the ticket's input plus
    /// `output` (items as stored) as the conversation a follow-up continues.
    pub fn keep(&self, ticket: Ticket, response: &serde_json::Value, output: &[serde_json::Value]) {
        let mut conversation = ticket.input;
        conversation.extend(output.iter().cloned());
        let stored = Stored {
            owner: ticket.owner,
            response: response.to_string().into_bytes(),
            conversation: serde_json::Value::Array(conversation)
                .to_string()
                .into_bytes(),
        };
        self.put(ticket.id, stored, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(owner: &str, bytes: usize) -> Stored {
        Stored {
            owner: Some(owner.into()),
            response: vec![b'x'; bytes],
            conversation: b"[]".to_vec(),
        }
    }

    #[test]
    fn owner_only_ttl_and_bounds() {
        let now = Instant::now();
        let store = StoredResponses::new(Duration::from_secs(10), 3, 10_000);
        store.put("a".into(), stored("alice", 10), now);
        assert!(store.get("a", Some("alice"), now).is_some());
        assert!(store.get("a", Some("bob"), now).is_none());
        assert!(store.get("a", None, now).is_none());
        assert!(!store.delete("a", Some("bob"), now));
        assert!(store
            .get("a", Some("alice"), now + Duration::from_secs(11))
            .is_none());

        for id in ["b", "c", "d", "e"] {
            store.put(id.into(), stored("alice", 10), now);
        }
        assert!(
            store.get("b", Some("alice"), now).is_none(),
            "oldest evicted"
        );
        assert!(store.get("e", Some("alice"), now).is_some());
        assert!(store.delete("e", Some("alice"), now));
        assert!(store.get("e", Some("alice"), now).is_none());

        store.put("big".into(), stored("alice", 9_400), now);
        assert!(store.get("big", Some("alice"), now).is_some());
        assert!(
            store.get("c", Some("alice"), now).is_none(),
            "evicted for bytes"
        );
        store.put("huge".into(), stored("alice", 20_000), now);
        assert!(
            store.get("huge", Some("alice"), now).is_none(),
            "over the bound"
        );
    }
}
