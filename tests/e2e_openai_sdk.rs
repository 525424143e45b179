//! End to end with the official `openai` Python SDK against the real binary and the fake
//! upstream. Needs the SDK: `scripts/test.sh` installs it into a virtualenv and passes its
//! interpreter in `GEMINI_ROTATOR_E2E_PYTHON`; plain `cargo test` skips this (ignored).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the openai SDK: run scripts/test.sh"]
async fn openai_python_sdk() {
    let python = std::env::var("GEMINI_ROTATOR_E2E_PYTHON")
        .expect("GEMINI_ROTATOR_E2E_PYTHON: run this test through scripts/test.sh");
    let expect = "The quick brown fox jumps over the lazy dog.";
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text(expect).chunks(4));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[fake_key(1), fake_key(2)]).set(
            "models.aliases",
            r#""fast" = { models = ["gemini-2.5-flash", "gemini-2.0-flash"] }"#,
        ))
        .start()
        .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/openai_sdk.py");
    let url = proxy.url();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(script)
            .env("GR_BASE_URL", url)
            .env("GR_TOKEN", TEST_TOKEN)
            .env("GR_MODEL", "gemini-2.5-flash")
            .env("GR_ALIAS", "fast")
            .env("GR_EXPECT", expect)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        // Bounded: the script's own client timeouts are 20 s per call.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().expect("python output")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "openai SDK checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nproxy logs:\n{}",
        proxy.logs()
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert_eq!(fake.keys_in_url(), 0);
}
