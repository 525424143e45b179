//! Live config: the running proxy follows its config file and the key and token files it names.
//!
//! Triggers are hints, never instructions: change events from the folders that hold those files
//! (notify; folders, not files, because editors save by renaming over and Kubernetes swaps a
//! `..data` symlink), a periodic content check for file systems that send no events, SIGHUP, and
//! `POST /admin/reload`. Each trigger re-reads everything by path; events and polls act only when
//! the bytes changed. A new config is validated whole and a snapshot built from it before one
//! `ArcSwap` store: a rejected config changes nothing, is logged once, and shows in `/status`.
//! A burst of events is debounced, and a config that fails to parse right after an event is
//! tried again once the writer has had time to finish, so a half-written file is never applied.
//! Only events that name one of those files (or a folder on their way, or Kubernetes' `..`
//! names) are hints: the other files in a watched folder are someone else's (the process's own
//! log and state files, a shell's redirect of its output), and were their writes hints, each
//! check that logs a line would cause the next.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::config::{self, Config, ConfigError};
use crate::reload_state::Memo;
use crate::state::{App, Snapshot};

/// Quiet time that ends a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A burst is cut off after this long even if events keep coming.
const MAX_BURST: Duration = Duration::from_secs(1);
/// After a failed parse that followed an event, the writer may still be writing: wait this
/// long and try again before calling the config bad.
const SETTLE: Duration = Duration::from_millis(400);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A change event in a watched folder.
    Event,
    /// The periodic content check.
    Poll,
    /// SIGHUP.
    Signal,
    /// `POST /admin/reload`.
    Admin,
}

impl Trigger {
    /// Explicit triggers rebuild even when nothing changed (re-enabling keys disabled until
    /// "reload", SPEC §6); hints act only on changed content.
    fn explicit(self) -> bool {
        matches!(self, Trigger::Signal | Trigger::Admin)
    }

    fn name(self) -> &'static str {
        match self {
            Trigger::Event => "file change",
            Trigger::Poll => "periodic check",
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin request",
        }
    }
}

/// The result of one reload attempt.
#[derive(Debug, Clone)]
pub enum Reloaded {
    Applied { hash: String, changes: Vec<String> },
    Unchanged,
    Rejected { error: String },
}

impl Reloaded {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Reloaded::Applied { hash, changes } => {
                json!({"ok": true, "applied": true, "hash": hash, "changes": changes})
            }
            Reloaded::Unchanged => json!({"ok": true, "applied": false, "changes": []}),
            Reloaded::Rejected { error } => json!({"ok": false, "applied": false, "error": error}),
        }
    }
}

/// Notes a reload's result: `/status` and the metric.
fn record(app: &App, ok: bool, error: Option<String>) {
    crate::metrics::record_reload(ok);
    app.reload.set_last(ok, error);
}

/// Reloads now. Serialised: concurrent triggers run one after the other.
pub async fn reload(app: &App, trigger: Trigger) -> Reloaded {
    let mut memo = app.reload.attempt.lock().await;
    let current = app.snapshot();
    let path = current.config.path.clone();
    let files = watched_files(&current.config);

    let fingerprint = tokio::task::spawn_blocking(move || fingerprint(&files))
        .await
        .unwrap_or(0);
    if !trigger.explicit() && memo.rejected.is_none() && memo.fingerprint == Some(fingerprint) {
        return Reloaded::Unchanged;
    }

    let mut loaded = load(&path).await;
    if loaded.is_err() && trigger == Trigger::Event {
        // The writer may be mid-way through a burst: give it a moment, then read again.
        tokio::time::sleep(SETTLE).await;
        loaded = load(&path).await;
    }
    memo.fingerprint = Some(fingerprint);

    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return reject(app, &mut memo, trigger, e.to_string()),
    };
    if !trigger.explicit() && loaded.config.hash == current.config.hash {
        if memo.rejected.take().is_some() {
            tracing::info!("config is valid again (unchanged from the running one)");
            record(app, true, None);
        }
        return Reloaded::Unchanged;
    }
    for warning in &loaded.warnings {
        tracing::warn!("config: {warning}");
    }

    let mut new = loaded.config;
    // What only a restart applies: the running process keeps its sockets and threads.
    let mut restart = Vec::new();
    if new.server.listen != current.config.server.listen {
        restart.push(format!(
            "server.listen changed from {} to {}: restart to apply; still serving on the old address",
            current.config.server.listen, new.server.listen
        ));
    }
    if new.server.workers != current.config.server.workers {
        restart.push(format!(
            "server.workers changed from {} to {}: restart to apply; still serving with {}",
            current.config.server.workers, new.server.workers, current.config.server.workers
        ));
        // The snapshot describes the threads that exist (one upstream client per worker).
        new.server.workers = current.config.server.workers;
    }
    let changes = describe_changes(&current.config, &new);
    if !restart.is_empty() {
        let note = restart.join("; ");
        tracing::warn!("{note}");
        *app.reload
            .restart_required
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(note);
    }
    if new.logging.level != current.config.logging.level {
        if let Some(log) = &app.reload.log {
            if let Err(e) = log.set_level(&new.logging.level) {
                tracing::warn!(error = %e, "could not apply the new log level");
            }
        }
    }
    if new.logging.format != current.config.logging.format
        || new.logging.directory != current.config.logging.directory
    {
        tracing::warn!("logging.format and logging.directory take effect at the next restart");
    }

    let hash = new.hash.clone();
    let snapshot = match Snapshot::rebuild(new, &app.keys, &app.usage, &current) {
        Ok(s) => s,
        Err(e) => return reject(app, &mut memo, trigger, e),
    };
    app.install(snapshot);
    // A changed `[state]` builds the new store and swaps it in (a small file read at most,
    // on the control runtime, never a request's thread).
    app.configure_state();
    memo.rejected = None;
    record(app, true, None);
    app.reload.rewatch.notify_one();
    tracing::info!(
        trigger = trigger.name(),
        hash = %short(&hash),
        "config reloaded: {}",
        if changes.is_empty() {
            "no effective change".to_string()
        } else {
            changes.join("; ")
        }
    );
    Reloaded::Applied { hash, changes }
}

async fn load(path: &Path) -> Result<config::Loaded, ConfigError> {
    let path = path.to_path_buf();
    match tokio::task::spawn_blocking(move || config::load(&path)).await {
        Ok(result) => result,
        Err(e) => Err(ConfigError {
            problems: vec![config::Problem {
                file: PathBuf::new(),
                line: 0,
                col: 0,
                field: String::new(),
                message: format!("config loading failed: {e}"),
            }],
        }),
    }
}

fn reject(app: &App, memo: &mut Memo, trigger: Trigger, error: String) -> Reloaded {
    if memo.rejected.as_deref() != Some(error.as_str()) {
        tracing::error!(
            trigger = trigger.name(),
            "config change rejected, the running config stays:\n{error}"
        );
        record(app, false, Some(error.clone()));
    }
    memo.rejected = Some(error.clone());
    Reloaded::Rejected { error }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Every file whose content makes up the config: the config file first.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.path.clone()];
    files.extend(config.files.iter().filter(|f| **f != config.path).cloned());
    files
}

/// A cheap content fingerprint: each file's bytes (or its absence), in order.
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().to_string().hash(&mut h),
        }
    }
    h.finish()
}

/// What a reload changes, in words, without secrets.
fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.state != new.state {
        out.push("state store changed".to_string());
    }
    let counted = |what: &str, added: usize, removed: usize, out: &mut Vec<String>| {
        if added + removed > 0 {
            out.push(format!("{what} +{added}/-{removed}"));
        }
    };
    let old_keys: HashSet<&str> = old.pool.keys.iter().map(|k| k.key.expose()).collect();
    let new_keys: HashSet<&str> = new.pool.keys.iter().map(|k| k.key.expose()).collect();
    counted(
        "keys",
        new_keys.difference(&old_keys).count(),
        old_keys.difference(&new_keys).count(),
        &mut out,
    );
    let tokens = |c: &Config| -> HashSet<String> {
        c.auth
            .tokens
            .iter()
            .map(|t| t.token.expose().to_string())
            .chain(
                c.auth
                    .admin_tokens
                    .iter()
                    .map(|t| format!("admin:{}", t.expose())),
            )
            .collect()
    };
    let (old_tokens, new_tokens) = (tokens(old), tokens(new));
    counted(
        "tokens",
        new_tokens.difference(&old_tokens).count(),
        old_tokens.difference(&new_tokens).count(),
        &mut out,
    );
    if old.access.allow != new.access.allow || old.access.deny != new.access.deny {
        out.push(format!(
            "ip rules: allow {} -> {}, deny {} -> {}",
            old.access.allow.len(),
            new.access.allow.len(),
            old.access.deny.len(),
            new.access.deny.len()
        ));
    }
    if old.server.trusted_proxies != new.server.trusted_proxies {
        out.push("trusted_proxies changed".into());
    }
    if old.server.cors_origins != new.server.cors_origins {
        out.push("cors_origins changed".into());
    }
    let limits = |s: &crate::config::Server| {
        (
            s.max_connections,
            s.max_in_flight,
            s.memory_budget,
            s.body_timeout,
            s.write_timeout,
        )
    };
    if limits(&old.server) != limits(&new.server) {
        out.push(format!(
            "server limits: max_connections {} -> {}, max_in_flight {} -> {}, memory_budget {} -> {}",
            old.server.max_connections,
            new.server.max_connections,
            old.server.max_in_flight,
            new.server.max_in_flight,
            old.server.memory_budget,
            new.server.memory_budget
        ));
    }
    let aliases = |c: &Config| -> HashMap<String, Vec<String>> {
        c.models
            .aliases
            .iter()
            .map(|(k, v)| (k.clone(), v.models.clone()))
            .collect()
    };
    if aliases(old) != aliases(new) {
        out.push(format!(
            "aliases {} -> {}",
            old.models.aliases.len(),
            new.models.aliases.len()
        ));
    }
    if old.upstream.base_url != new.upstream.base_url {
        out.push("upstream.base_url changed".into());
    }
    if old.upstream != new.upstream {
        // Otherwise the new snapshot shares the old one's clients and their open connections.
        out.push("upstream settings changed: new upstream connections".into());
    }
    if old.pool.strategy != new.pool.strategy
        || old.pool.cooldown != new.pool.cooldown
        || old.pool.failure_threshold != new.pool.failure_threshold
        || old.pool.max_attempts != new.pool.max_attempts
        || old.pool.retry != new.pool.retry
    {
        out.push("pool settings changed".into());
    }
    if old.logging.level != new.logging.level {
        out.push(format!(
            "log level {} -> {}",
            old.logging.level, new.logging.level
        ));
    }
    out
}

/// What starts a reload: folder events (hints), SIGHUP; the periodic check and admin requests
/// need no setup. Installed before the proxy says it is listening, so an edit or a signal that
/// follows that line at once is never missed.
pub struct Triggers {
    hint: Arc<Notify>,
    watcher: Option<RecommendedWatcher>,
    watched: Watched,
    interest: Interest,
    hup: Hup,
}

impl Triggers {
    pub fn install(app: &App) -> Triggers {
        let hint = Arc::new(Notify::new());
        let sender = hint.clone();
        let interest = Interest::default();
        interest.follow(&app.snapshot().config);
        let filter = interest.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // An event (or an error) is only a hint to look again, and only an event that
            // names one of our files is even that.
            if event.is_ok_and(|e| !filter.is_hint(&e)) {
                return;
            }
            sender.notify_one();
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for config changes; relying on the periodic check and SIGHUP");
                None
            }
        };
        let mut watched = Watched::default();
        if let Some(w) = watcher.as_mut() {
            watched.sync(w, &folders(&app.snapshot().config));
        }
        Triggers {
            hint,
            watcher,
            watched,
            interest,
            hup: hup_signal(),
        }
    }
}

/// Opening, reading and closing a file without writing it changes nothing. Checking the files
/// reads them: were those hints, every check would cause the next one, forever.
fn is_read(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

/// The names in the watched folders whose events are hints: each watched file's and its
/// folder's, and for a file reached through symlinks (a key file linked to the week's file
/// beside it), each name on the way. Shared with the watcher's callback, renewed after each
/// check (the config may name other files).
#[derive(Clone, Default)]
struct Interest(Arc<ArcSwap<HashSet<OsString>>>);

/// Symlink hops followed per file when collecting names (a loop ends here too).
const MAX_HOPS: usize = 8;

impl Interest {
    fn follow(&self, config: &Config) {
        let mut names = HashSet::new();
        let mut add = |p: &Path| {
            names.extend(p.file_name().map(OsString::from));
            names.extend(p.parent().and_then(Path::file_name).map(OsString::from));
        };
        for file in watched_files(config) {
            add(&file);
            let mut hop = file.clone();
            for _ in 0..MAX_HOPS {
                let Ok(target) = std::fs::read_link(&hop) else {
                    break;
                };
                hop = match hop.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
                add(&hop);
            }
            if let Ok(real) = file.canonicalize() {
                add(&real);
            }
        }
        self.0.store(Arc::new(names));
    }

    /// Whether `event` is worth a look: not a mere read, and naming one of our names, a name
    /// Kubernetes' volume writer uses (`..data`, `..data_tmp`, `..2026_12_04_…`), or nothing
    /// (an overflow: anything may have changed).
    fn is_hint(&self, event: &notify::Event) -> bool {
        if is_read(&event.kind) {
            return false;
        }
        let names = self.0.load();
        event.paths.is_empty()
            || event.paths.iter().any(|p| {
                p.file_name()
                    .is_none_or(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."))
            })
    }
}

/// Runs the triggers: folder events (debounced), the periodic check, SIGHUP. Never returns
/// while the process serves.
pub async fn watch(app: Arc<App>, triggers: Triggers) {
    let Triggers {
        hint,
        mut watcher,
        mut watched,
        interest,
        mut hup,
    } = triggers;
    loop {
        let poll = app.snapshot().config.server.reload_poll;
        let poll_sleep = if poll.is_zero() {
            Duration::from_secs(3600)
        } else {
            poll
        };
        let trigger = tokio::select! {
            _ = hint.notified() => {
                debounce(&hint).await;
                Trigger::Event
            }
            _ = tokio::time::sleep(poll_sleep), if !poll.is_zero() => Trigger::Poll,
            _ = recv_hup(&mut hup) => Trigger::Signal,
            _ = app.reload.rewatch.notified() => {
                // An admin reload applied a config that may name other folders and files.
                rewatch(&app, watcher.as_mut(), &mut watched, &interest);
                continue;
            }
        };
        if trigger == Trigger::Signal {
            tracing::info!("SIGHUP: reloading the config");
        }
        if matches!(reload(&app, trigger).await, Reloaded::Unchanged) {
            tracing::debug!(?trigger, "config files checked: unchanged");
        }
        // Folders may have appeared, vanished or been replaced, links re-pointed: (re)watch
        // what is there now.
        rewatch(&app, watcher.as_mut(), &mut watched, &interest);
    }
}

/// Watches the folders of the config now serving, and follows its files' names.
fn rewatch(
    app: &App,
    watcher: Option<&mut RecommendedWatcher>,
    watched: &mut Watched,
    interest: &Interest,
) {
    let config = &app.snapshot().config;
    if let Some(w) = watcher {
        watched.sync(w, &folders(config));
    }
    interest.follow(config);
}

/// Waits until events stop for `DEBOUNCE`, or `MAX_BURST` has passed.
async fn debounce(hint: &Notify) {
    let deadline = tokio::time::Instant::now() + MAX_BURST;
    loop {
        tokio::select! {
            _ = hint.notified() => {
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
            }
            _ = tokio::time::sleep(DEBOUNCE) => return,
        }
    }
}

/// The folders to watch: each file's folder and that folder's parent (so a folder that is
/// removed and comes back is noticed and watched again).
fn folders(config: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for file in watched_files(config) {
        if let Some(dir) = file.parent() {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            };
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                out.push(parent.to_path_buf());
            }
            out.push(dir);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Folders currently watched, with the identity of what was watched so a replaced folder
/// (same path, new inode) is watched again.
#[derive(Default)]
struct Watched {
    dirs: HashMap<PathBuf, u64>,
}

impl Watched {
    fn sync(&mut self, watcher: &mut RecommendedWatcher, wanted: &[PathBuf]) {
        let wanted_set: HashSet<&PathBuf> = wanted.iter().collect();
        self.dirs.retain(|dir, _| {
            let keep = wanted_set.contains(dir);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            let Some(id) = identity(dir) else {
                // Gone for now; the parent's events will tell us when it returns.
                self.dirs.remove(dir);
                continue;
            };
            if self.dirs.get(dir) == Some(&id) {
                continue;
            }
            let _ = watcher.unwatch(dir);
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.clone(), id);
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch folder");
                }
            }
        }
    }
}

#[cfg(unix)]
fn identity(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| m.ino() ^ m.dev().rotate_left(32))
}

#[cfg(not(unix))]
fn identity(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|_| 1)
}

/// SIGHUP, registered with the OS when [`Triggers`] are installed.
#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

#[cfg(unix)]
fn hup_signal() -> Hup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
fn hup_signal() -> Hup {
    None
}

async fn recv_hup(hup: &mut Hup) {
    #[cfg(unix)]
    if let Some(s) = hup.as_mut() {
        if s.recv().await.is_some() {
            return;
        }
    }
    let _ = hup;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_content() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let f = dir.path().join("a.toml");
        let _ = std::fs::write(&f, "one");
        let one = fingerprint(std::slice::from_ref(&f));
        let _ = std::fs::write(&f, "two");
        let two = fingerprint(std::slice::from_ref(&f));
        let _ = std::fs::remove_file(&f);
        let gone = fingerprint(std::slice::from_ref(&f));
        assert!(one != two && two != gone && one != gone);
    }

    #[cfg(unix)]
    #[test]
    fn only_events_naming_our_files_are_hints() {
        use notify::event::{CreateKind, DataChange, ModifyKind, RenameMode};
        use notify::Event;

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path();
        let write = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write(
            "config.toml",
            "[auth]\ntokens = [\"sk-test\"]\n[pool]\nkey_files = [\"keys.txt\"]\n",
        );
        write("keys-week-49.txt", "AIzaSyTEST-key-for-the-watcher-0001\n");
        std::os::unix::fs::symlink("keys-week-49.txt", d.join("keys.txt"))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
        let loaded = config::load(&d.join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
        let interest = Interest::default();
        interest.follow(&loaded.config);

        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let event = |kind: EventKind, names: &[&str]| Event {
            kind,
            paths: names.iter().map(|n| d.join(n)).collect(),
            attrs: Default::default(),
        };
        for (kind, names, hint) in [
            (data, &["config.toml"][..], true),
            (data, &["keys.txt"], true),
            // The file the key file's symlink points at, edited in place.
            (data, &["keys-week-49.txt"], true),
            // An editor's save: a temp file renamed over the config.
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[".config.toml.swp", "config.toml"],
                true,
            ),
            // Kubernetes' ConfigMap update.
            (
                EventKind::Create(CreateKind::Any),
                &["..2026_12_04_18_00_00.1"],
                true,
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["..data_tmp", "..data"],
                true,
            ),
            // Everyone else's files in the folder: a shell's redirect of our own output, the
            // state file, our log files, another program's.
            (data, &["proxy.log"], false),
            (data, &["gemini-rotator.state"], false),
            (data, &["gemini-rotator.2026-12-04.log"], false),
            (EventKind::Create(CreateKind::Any), &["notes.txt"], false),
            // Reading our files (the check itself does) changes nothing.
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["config.toml"],
                false,
            ),
            // An overflow names nothing: anything may have changed.
            (EventKind::Other, &[], true),
        ] {
            assert_eq!(
                interest.is_hint(&event(kind, names)),
                hint,
                "{kind:?} {names:?}"
            );
        }
        // The parent folder's watch: an event about the config's folder itself.
        let folder = d.file_name().map(OsString::from).unwrap_or_default();
        let about_folder = Event {
            kind: EventKind::Create(CreateKind::Folder),
            paths: vec![d.to_path_buf()],
            attrs: Default::default(),
        };
        assert!(!folder.is_empty() && interest.is_hint(&about_folder));
    }
}
