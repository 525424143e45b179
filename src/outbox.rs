//! What the small ledgers (lockout, dashboard sessions, thought signatures, stored responses,
//! resource pins) and the admin actions tell a shared state store: a bounded, lossy queue of small events, drained by the
//! Redis store's sync task (`store/redis.rs`). With no shared store nothing is queued: a send
//! is one atomic load. A send never blocks or waits: when the queue is full the event is
//! dropped (the store's periodic reconcile, or the next event, makes up for it).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;

/// Events queued at most before new ones are dropped.
pub const CAPACITY: usize = 4096;

/// Something one replica learned that the others should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A missing or wrong credential from `ip` (lockout counts fleet-wide); `limit` is the
    /// running `access.max_token_failures`.
    CredentialFailed {
        ip: IpAddr,
        limit: u32,
    },
    /// A dashboard session: its id only as a hash, its opener as the admin token's fingerprint
    /// (`None`: opened without a token), lasting `left`.
    SessionOpened {
        id_hash: [u8; 32],
        opened_by: Option<[u8; 32]>,
        left: Duration,
    },
    SessionEnded {
        id_hash: [u8; 32],
    },
    /// Gemini 3 thought signatures by tool-call id.
    Signatures(Vec<(String, String)>),
    /// A stored Responses API response (`owner`: the client token's name), its JSON texts.
    ResponseStored {
        id: String,
        owner: Option<String>,
        response: Vec<u8>,
        conversation: Vec<u8>,
    },
    ResponseDeleted {
        id: String,
    },
    /// A Gemini resource pinned to the key that created it (`affinity`): its name (an upload
    /// session's only as `uploads/{hash}`), the key (fingerprinted by the store), the owner
    /// (the client token's name, fingerprinted too), its expiry and, for an upload session,
    /// where its chunks go upstream.
    PinSet {
        name: String,
        key: crate::secret::ApiKey,
        owner: String,
        expires: SystemTime,
        upstream: Option<String>,
    },
    /// A pin forgotten fleet-wide (the resource was deleted, an upload finished).
    PinRemoved {
        name: String,
        owner: String,
    },
    /// An admin reset of these keys (by their raw value, fingerprinted by the store), or of
    /// every key when `keys` is `None`; only `model` when given.
    Reset {
        keys: Option<Vec<crate::secret::ApiKey>>,
        model: Option<String>,
    },
}

/// Bytes of stored responses queued at most (a Redis outage must not pile them up).
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// The sending side, shared by every ledger (clones share the queue).
#[derive(Clone, Default)]
pub struct Outbox(Arc<ArcSwapOption<mpsc::Sender<Event>>>, Arc<AtomicUsize>);

impl Event {
    /// The bytes this event holds beyond its fixed size.
    pub fn bytes(&self) -> usize {
        match self {
            Event::ResponseStored {
                response,
                conversation,
                ..
            } => response.len() + conversation.len(),
            _ => 0,
        }
    }
}

impl Outbox {
    /// Queues `event` if a shared store listens; never blocks. Dropped when the queue is full
    /// or holds `MAX_QUEUED_BYTES` already.
    pub fn send(&self, event: Event) {
        let Some(tx) = self.0.load_full() else {
            return;
        };
        let bytes = event.bytes();
        // Reserve the bytes first (a response only): over the bound, give them back and drop.
        if bytes > 0 && self.1.fetch_add(bytes, Ordering::AcqRel) + bytes > MAX_QUEUED_BYTES {
            self.1.fetch_sub(bytes, Ordering::AcqRel);
            return;
        }
        if tx.try_send(event).is_err() && bytes > 0 {
            self.1.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The receiver took `event` off the queue: its bytes no longer count.
    pub fn taken(&self, event: &Event) {
        let bytes = event.bytes();
        if bytes > 0 {
            self.1.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Whether a shared store listens (callers may skip building an event).
    pub fn listening(&self) -> bool {
        self.0.load().is_some()
    }

    /// A new queue: events sent from now on go to the returned receiver (the previous
    /// receiver, if any, gets no more).
    pub fn open(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        self.0.store(Some(Arc::new(tx)));
        rx
    }

    /// No shared store any more: events are not queued.
    pub fn close(&self) {
        self.0.store(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_only_while_open_and_never_blocks() {
        let outbox = Outbox::default();
        outbox.send(Event::SessionEnded { id_hash: [0; 32] });
        let mut rx = outbox.open();
        for _ in 0..CAPACITY + 10 {
            outbox.send(Event::SessionEnded { id_hash: [1; 32] });
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, CAPACITY, "full queue drops, never blocks");
        outbox.close();
        outbox.send(Event::SessionEnded { id_hash: [2; 32] });
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn stored_responses_are_bounded_in_bytes() {
        let outbox = Outbox::default();
        let mut rx = outbox.open();
        let big = |i: usize| Event::ResponseStored {
            id: format!("resp_{i}"),
            owner: None,
            response: vec![b'x'; 1024 * 1024],
            conversation: Vec::new(),
        };
        for i in 0..40 {
            outbox.send(big(i));
        }
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            outbox.taken(&ev);
            got.push(ev);
        }
        assert_eq!(got.len(), MAX_QUEUED_BYTES / (1024 * 1024));
        // Taken off the queue: room again.
        outbox.send(big(99));
        assert!(rx.try_recv().is_ok());
    }
}
