//! Logging setup: tracing to stderr (text or JSON) and, with `logging.directory`, to files
//! rotated daily keeping `max_files`. The level can be changed later without a restart.
//!
//! No worker ever waits for a log line: stderr and the files are written by their own threads
//! (`tracing_appender::non_blocking`, lossy), so a stderr pipe nobody reads, or a slow disk,
//! drops lines instead of stalling requests. [`flush`] writes what is queued at exit.
//!
//! The file watcher's own per-event trace lines (the `notify` crate) are capped at `info`
//! unless the level names `notify`: with the log folder watched, each would describe the write
//! of the one before, forever.
//!
//! Secrets never reach a log line because keys and tokens are masking types; this module only
//! decides where lines go.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{Builder as RollingBuilder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, Logging};

/// Log files are `gemini-rotator.YYYY-MM-DD.log` in `logging.directory`.
const FILE_PREFIX: &str = "gemini-rotator";
const FILE_SUFFIX: &str = "log";
/// Lines queued for stderr or a file before new ones are dropped.
const QUEUED_LINES: usize = 16_384;

/// The writer threads' guards: dropping one writes out what its queue still holds.
static GUARDS: Mutex<Vec<WorkerGuard>> = Mutex::new(Vec::new());

/// Allows changing the level at run time.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Applies a new level directive (already validated by the config).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = filter(level)?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// The level directive, with the file watcher's own chatter capped (see the module doc).
fn filter(level: &str) -> Result<EnvFilter, String> {
    let directive = if level.contains("notify") {
        level.to_string()
    } else {
        format!("{level},notify=info")
    };
    EnvFilter::try_new(directive).map_err(|e| e.to_string())
}

/// Installs the global subscriber. Call once; call [`flush`] before the process exits.
pub fn init(cfg: &Logging) -> Result<LogHandle, String> {
    let filter = filter(&cfg.level).map_err(|e| format!("logging.level: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);

    let ansi = std::io::stderr().is_terminal();
    let (stderr, stderr_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-stderr")
        .finish(std::io::stderr());
    let mut guards = vec![stderr_guard];
    let stderr_layer = match cfg.format {
        LogFormat::Text => fmt::layer().with_writer(stderr).with_ansi(ansi).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(stderr)
            .boxed(),
    };

    let file_layer = match &cfg.directory {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("logging.directory {}: {e}", dir.display()))?;
            let appender = RollingBuilder::new()
                .rotation(Rotation::DAILY)
                .filename_prefix(FILE_PREFIX)
                .filename_suffix(FILE_SUFFIX)
                .max_log_files(cfg.max_files.max(1))
                .build(dir)
                .map_err(|e| format!("logging.directory {}: {e}", dir.display()))?;
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(QUEUED_LINES)
                .thread_name("log-file")
                .finish(appender);
            guards.push(guard);
            Some(match cfg.format {
                LogFormat::Text => fmt::layer().with_writer(writer).with_ansi(false).boxed(),
                LogFormat::Json => fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .boxed(),
            })
        }
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| format!("logging already initialised: {e}"))?;

    GUARDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(guards);
    Ok(LogHandle { filter: handle })
}

/// Writes out the queued lines (waiting a moment for each writer thread). Lines logged after
/// this are dropped. Call once, as the process ends.
pub fn flush() {
    let guards = std::mem::take(&mut *GUARDS.lock().unwrap_or_else(PoisonError::into_inner));
    drop(guards);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchers_chatter_is_capped() {
        let shown = |level: &str| filter(level).map(|f| f.to_string()).unwrap_or_default();
        assert!(shown("trace").contains("notify=info"), "{}", shown("trace"));
        assert!(shown("debug,hyper=info").contains("notify=info"));
        assert_eq!(shown("notify=trace"), "notify=trace");
    }
}
