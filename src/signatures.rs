//! Gemini 3 thought signatures, remembered by tool-call id.
//!
//! Gemini 3 rejects a replayed tool call whose `thoughtSignature` is missing, and most OpenAI
//! clients drop the `extra_content` field that carries it. So the proxy keeps the signatures it
//! handed out and puts them back when the client replays the call. Memory is bounded: the
//! oldest entries go first. The ids are spread over striped locks (no process-wide lock per
//! request); sequence numbers keep the bound global.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::outbox::{Event, Outbox};

/// Signatures are kilobytes at most; this bounds the cache to a few tens of MiB.
const CAPACITY: usize = 8192;

/// Independent locks the ids are spread over, so concurrent requests rarely meet.
const STRIPES: usize = 16;

/// The last `CAPACITY` new ids are kept, whatever stripe they fell in: each gets a sequence
/// number, and an entry more than `CAPACITY` numbers old is gone (removed as its stripe, or the
/// stripe every insert sweeps in turn, is next written).
pub struct SignatureCache {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    /// The next id's sequence number: how many new ids were remembered.
    next: AtomicU64,
    /// New signatures go to a shared store (when one listens), so every replica has them.
    outbox: Outbox,
}

impl Default for SignatureCache {
    fn default() -> Self {
        SignatureCache::new(Outbox::default())
    }
}

#[derive(Default)]
struct Stripe {
    /// id -> (sequence number, signature).
    map: HashMap<String, (u64, String)>,
    /// Ids in the order they came, with their sequence number.
    order: VecDeque<(u64, String)>,
}

impl SignatureCache {
    pub fn get(&self, tool_call_id: &str) -> Option<String> {
        let stripe = self.stripe(tool_call_id);
        let (seq, signature) = stripe.map.get(tool_call_id)?;
        self.live(*seq).then(|| signature.clone())
    }

    /// A cache whose new signatures are also told to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        SignatureCache {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            next: AtomicU64::new(0),
            outbox,
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
        for (id, signature) in pairs {
            let seq = {
                let mut stripe = self.stripe(&id);
                let stripe = &mut *stripe;
                match stripe.map.get_mut(&id) {
                    // A known id keeps its place in the order, as a map insert would.
                    Some((seq, old)) if self.live(*seq) => {
                        *old = signature;
                        continue;
                    }
                    _ => {}
                }
                let seq = self.next.fetch_add(1, Ordering::Relaxed);
                stripe.map.insert(id.clone(), (seq, signature));
                stripe.order.push_back((seq, id));
                self.prune(stripe);
                seq
            };
            // Stripes nobody writes to are swept too, one per insert in turn.
            let i = (seq % STRIPES as u64) as usize;
            self.prune(&mut lock(&self.stripes[i]));
        }
    }

    /// Whether the entry numbered `seq` is among the last `CAPACITY` new ids.
    fn live(&self, seq: u64) -> bool {
        self.next.load(Ordering::Relaxed).saturating_sub(seq) <= CAPACITY as u64
    }

    fn prune(&self, stripe: &mut Stripe) {
        while let Some((seq, _)) = stripe.order.front() {
            if self.live(*seq) {
                break;
            }
            if let Some((seq, id)) = stripe.order.pop_front() {
                if stripe.map.get(&id).is_some_and(|(s, _)| *s == seq) {
                    stripe.map.remove(&id);
                }
            }
        }
    }

    fn stripe(&self, id: &str) -> MutexGuard<'_, Stripe> {
        let i = (self.hasher.hash_one(id) % STRIPES as u64) as usize;
        lock(&self.stripes[i])
    }
}

fn lock(stripe: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    stripe.lock().unwrap_or_else(PoisonError::into_inner)
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
