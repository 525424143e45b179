//! Runs one end-to-end Python script with the interpreter `scripts/test.sh` prepared
//! (`GEMINI_ROTATOR_E2E_PYTHON`), bounded in time. Included by the `e2e_*` test files.

use std::process::Output;
use std::time::Duration;

/// Runs `tests/e2e/<script>` like [`python`] and asserts it passed every check (exit 0 and its
/// closing "N passed, 0 failed" line); `logs` (the proxy's) go into the failure message.
/// Returns what the script printed.
pub async fn passing(
    script: &str,
    envs: Vec<(&'static str, String)>,
    limit: Duration,
    logs: impl FnOnce() -> String,
) -> String {
    let output = python(script, envs, limit).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nproxy logs:\n{}",
        logs()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    stdout
}

/// Runs `tests/e2e/<script>` with `envs`; kills it after `limit`.
pub async fn python(script: &str, envs: Vec<(&'static str, String)>, limit: Duration) -> Output {
    let python = std::env::var("GEMINI_ROTATOR_E2E_PYTHON")
        .expect("GEMINI_ROTATOR_E2E_PYTHON: run this test through scripts/test.sh");
    let path = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    crate::support::run_script(python, path, envs, limit).await
}
