//! Runs one end-to-end Python script with the interpreter `scripts/test.sh` prepared
//! (`GEMINI_ROTATOR_E2E_PYTHON`), bounded in time. Included by the `e2e_*` test files.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `tests/e2e/<script>` with `envs`; kills it after `limit`.
pub async fn python(script: &str, envs: Vec<(&'static str, String)>, limit: Duration) -> Output {
    let python = std::env::var("GEMINI_ROTATOR_E2E_PYTHON")
        .expect("GEMINI_ROTATOR_E2E_PYTHON: run this test through scripts/test.sh");
    let path = format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(path)
            .envs(envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python");
        let deadline = Instant::now() + limit;
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().expect("python output")
    })
    .await
    .expect("join")
}
