//! The `gemini-rotator` command: parse the command line, load the config, set up logging,
//! and serve. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gemini_rotator::{config, logging, Exit};

mod healthcheck;

/// mimalloc instead of the C library's allocator: hyper and reqwest allocate per request, and
/// glibc's (and musl's, in the static image) malloc showed up as a fifth of the CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One endpoint in front of many Gemini API keys (OpenAI and Gemini APIs).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(long, env = "GEMINI_ROTATOR_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    /// Validate the config (and every file it names), report problems and exit 0 or 1.
    #[arg(long)]
    check: bool,
    /// GET URL and exit 0 on a 2xx answer, 1 otherwise: for container health checks where there
    /// is no curl. Without a URL: /livez at the config's `server.listen` (only that field is
    /// read; 127.0.0.1:7860 if the file cannot be read).
    #[arg(long, value_name = "URL", num_args = 0..=1, conflicts_with = "check")]
    healthcheck: Option<Option<String>>,
}

/// Transparent huge pages off for this process. mimalloc reserves its arena 1 GiB-aligned, so
/// on a host whose THP mode is `always` (common) every 2 MiB of it the allocator touched became
/// resident whole: 14 MiB of huge pages for about 2 MiB in use at idle (24 -> 11 MiB RSS).
/// What was faulted before `main` stays; everything after is ordinary pages.
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    no_transparent_huge_pages();
    let cli = Cli::parse();
    if let Some(url) = &cli.healthcheck {
        let url = url
            .clone()
            .unwrap_or_else(|| healthcheck::url_from_config(&cli.config));
        return match healthcheck::check(&url) {
            Ok(status) => {
                println!("{url}: {status}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{url}: unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let loaded = match config::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: configuration rejected ({} problem{})",
                cli.config.display(),
                e.problems.len(),
                if e.problems.len() == 1 { "" } else { "s" }
            );
            return ExitCode::from(Exit::BadConfig as u8);
        }
    };
    if cli.check {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        println!(
            "{}: ok ({} keys, {} client tokens, {} aliases)",
            cli.config.display(),
            loaded.config.pool.keys.len(),
            loaded.config.auth.tokens.len(),
            loaded.config.models.aliases.len()
        );
        return ExitCode::SUCCESS;
    }

    let log = match logging::init(&loaded.config.logging) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("cannot set up logging: {e}");
            return ExitCode::from(Exit::BadConfig as u8);
        }
    };
    // Control tasks only (signals, reload); requests are served on the server's workers.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(gemini_rotator::run(loaded, Some(log)));
    // Streams cut at shutdown may leave tasks behind; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // The log writers run on their own threads: write out what they still hold.
    logging::flush();
    ExitCode::from(exit as u8)
}
