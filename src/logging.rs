//! Logging setup: tracing to stderr (text or JSON) and, with `logging.directory`, to files
//! rotated daily keeping `max_files`. The level can be changed later without a restart.
//!
//! Secrets never reach a log line because keys and tokens are masking types; this module only
//! decides where lines go.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder as RollingBuilder, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, Logging};

/// Keeps the file writer flushing and allows changing the level at run time.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    _file_guard: Option<WorkerGuard>,
}

impl LogHandle {
    /// Applies a new level directive (already validated by the config).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. Call once.
pub fn init(cfg: &Logging) -> Result<LogHandle, String> {
    let filter = EnvFilter::try_new(&cfg.level).map_err(|e| format!("logging.level: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);

    let ansi = std::io::stderr().is_terminal();
    let stderr_layer = match cfg.format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let mut guard = None;
    let file_layer = match &cfg.directory {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("logging.directory {}: {e}", dir.display()))?;
            let appender = RollingBuilder::new()
                .rotation(Rotation::DAILY)
                .filename_prefix("gemini-rotator")
                .filename_suffix("log")
                .max_log_files(cfg.max_files.max(1))
                .build(dir)
                .map_err(|e| format!("logging.directory {}: {e}", dir.display()))?;
            let (writer, g) = tracing_appender::non_blocking(appender);
            guard = Some(g);
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

    Ok(LogHandle {
        filter: handle,
        _file_guard: guard,
    })
}
