//! The list of models Google offers, cached between requests: fetched with any usable key,
//! kept for `models.refresh`, and still served (retried after a short pause) when a refresh
//! fails. It outlives snapshots; a change of `upstream.base_url` invalidates it. How the list is
//! fetched is the caller's (`api::models`): this module only keeps it.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::unix_now;

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub input_token_limit: Option<u64>,
    pub output_token_limit: Option<u64>,
}

struct Cached {
    fetched: Instant,
    created: u64,
    base_url: String,
    models: Arc<Vec<ModelInfo>>,
}

/// Outlives snapshots; a change of `upstream.base_url` invalidates it.
#[derive(Default)]
pub struct ModelsCache {
    inner: tokio::sync::Mutex<Option<Cached>>,
}

impl ModelsCache {
    /// The list for `base_url`, from cache while younger than `refresh`, else from `fetch`.
    /// Returns `(models, created)`.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        base_url: &str,
        refresh: Duration,
        fetch: F,
    ) -> Result<(Arc<Vec<ModelInfo>>, u64), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<ModelInfo>, E>>,
        E: Display,
    {
        let mut guard = self.inner.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.base_url == base_url && c.fetched.elapsed() < refresh {
                return Ok((c.models.clone(), c.created));
            }
        }
        match fetch().await {
            Ok(models) => {
                let models = Arc::new(models);
                *guard = Some(Cached {
                    fetched: Instant::now(),
                    created: unix_now(),
                    base_url: base_url.to_string(),
                    models: models.clone(),
                });
                Ok((models, unix_now()))
            }
            Err(e) => match guard.as_mut() {
                Some(c) if c.base_url == base_url => {
                    tracing::warn!(error = %e, "model list refresh failed; serving the cached list");
                    // Try again after a short pause rather than on every request.
                    c.fetched = Instant::now()
                        .checked_sub(refresh.saturating_sub(Duration::from_secs(30)))
                        .unwrap_or_else(Instant::now);
                    Ok((c.models.clone(), c.created))
                }
                _ => Err(e),
            },
        }
    }
}
