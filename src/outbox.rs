//! What the small ledgers (lockout, dashboard sessions, thought signatures) and the admin
//! actions tell a shared state store: a bounded, lossy queue of small events, drained by the
//! Redis store's sync task (`store/redis.rs`). With no shared store nothing is queued: a send
//! is one atomic load. A send never blocks or waits: when the queue is full the event is
//! dropped (the store's periodic reconcile, or the next event, makes up for it).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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
    /// An admin reset of these keys (by their raw value, fingerprinted by the store), or of
    /// every key when `keys` is `None`; only `model` when given.
    Reset {
        keys: Option<Vec<crate::secret::ApiKey>>,
        model: Option<String>,
    },
}

/// The sending side, shared by every ledger (clones share the queue).
#[derive(Clone, Default)]
pub struct Outbox(Arc<ArcSwapOption<mpsc::Sender<Event>>>);

impl Outbox {
    /// Queues `event` if a shared store listens; never blocks.
    pub fn send(&self, event: Event) {
        if let Some(tx) = self.0.load().as_ref() {
            let _ = tx.try_send(event);
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
}
