//! The Autobahn|Testsuite's fuzzing client (run by kosoku, a Rust runner of Autobahn's own case
//! files, from PyPI) against an echo endpoint: cases 1-10. Cases 12-13 test permessage-deflate,
//! which Switchboard does not offer, so they are left out.

use std::collections::BTreeMap;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_1_to_10_pass() {
    let ws = Workspace::new();
    // The suite sends messages of up to 16 MiB (section 9).
    ws.write(
        "echo/echo.websocket",
        r#"{"handler": "echo/h", "endpoint": "echo", "maxMessageSize": 16777216}"#,
    )
    .write("echo/h.js", "exports.onMessage = (m) => m;");
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    let reports = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("autobahn");
    let _ = std::fs::remove_dir_all(&reports);
    let url = server.ws_url("echo");
    let output = tokio::task::spawn_blocking({
        let reports = reports.clone();
        move || {
            // Through Python, so that a `pip install --user` outside PATH works too.
            std::process::Command::new("python3")
                .args([
                    "-c",
                    "import sys; from kosoku._cli import main; sys.argv[0] = 'kosoku'; main()",
                ])
                .args(["-p", "2", "-x", "12.*", "-x", "13.*", "-o"])
                .arg(&reports)
                .arg(&url)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("kosoku (the test command installs it with pip)");
    let printed = String::from_utf8_lossy(&output.stdout);
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("index.json")).unwrap_or_else(|e| {
            panic!(
                "no report from kosoku ({e}):\n{printed}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        }),
    )
    .unwrap();
    let cases = index
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_object()
        .unwrap();
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (case, result) in cases {
        let behavior = result["behavior"].as_str().unwrap_or("?").to_string();
        let close = result["behaviorClose"].as_str().unwrap_or("?");
        if !matches!(behavior.as_str(), "OK" | "NON-STRICT" | "INFORMATIONAL") || close == "FAILED"
        {
            failures.push(format!("{case}: {behavior}/{close}"));
        }
        *verdicts.entry(behavior).or_default() += 1;
    }
    eprintln!(
        "Autobahn cases 1-10 against Switchboard: {verdicts:?}; reports in {}",
        reports.display()
    );
    assert!(
        cases.len() >= 300,
        "only {} cases ran:\n{printed}",
        cases.len()
    );
    assert!(failures.is_empty(), "failed cases: {failures:?}");
}
