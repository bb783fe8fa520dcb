//! The Autobahn|Testsuite's fuzzing client (run by kosoku, a Rust runner of Autobahn's own case
//! files, from PyPI) against an echo endpoint: cases 1-10 (the protocol), and cases 12-13
//! (permessage-deflate), 12 against shared compression and 13 against dedicated compression
//! (every case once, both modes: 12 sends five kinds of data at 18 sizes and fragmentations, 13
//! the same data with each combination of window sizes and context takeover offered, which
//! dedicated mode honours).

use std::collections::BTreeMap;

use crate::support::*;

/// What kosoku reported: every case's verdict counted, and the cases that failed.
struct Report {
    /// Cases per behaviour (OK, NON-STRICT, INFORMATIONAL, ...).
    verdicts: BTreeMap<String, usize>,
    /// `case: behaviour/close` of each case that did not pass.
    failures: Vec<String>,
    /// How many cases ran.
    cases: usize,
    /// kosoku's own output, for the assertion messages.
    printed: String,
}

/// Runs kosoku with `selection` (its `-i`/`-x` options) against `url`, reports in `name`.
async fn kosoku(url: String, selection: &[&str], name: &str) -> Report {
    let reports = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&reports);
    let selection: Vec<String> = selection.iter().map(|s| s.to_string()).collect();
    let output = tokio::task::spawn_blocking({
        let reports = reports.clone();
        let selection = selection.clone();
        move || {
            // Through Python, so that a `pip install --user` outside PATH works too.
            std::process::Command::new("python3")
                .args([
                    "-c",
                    "import sys; from kosoku._cli import main; sys.argv[0] = 'kosoku'; main()",
                ])
                .args(["-p", "2"])
                .args(&selection)
                .arg("-o")
                .arg(&reports)
                .arg(&url)
                .output()
        }
    })
    .await
    .unwrap()
    .expect("kosoku (the test command installs it with pip)");
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
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
            let why = result["result"].as_str().unwrap_or("");
            failures.push(format!("{case}: {behavior}/{close} {why}"));
        }
        *verdicts.entry(behavior).or_default() += 1;
    }
    eprintln!(
        "Autobahn {selection:?} against Switchboard: {verdicts:?}; reports in {}",
        reports.display()
    );
    Report {
        verdicts,
        failures,
        cases: cases.len(),
        printed,
    }
}

/// An echo endpoint, served with `options`. The suite sends messages of up to 16 MiB (section
/// 9), and compressed cases of up to 128 KiB.
fn echo_server(options: &[&str]) -> (Workspace, Server) {
    let ws = Workspace::new();
    ws.write(
        "echo/echo.websocket",
        r#"{"handler": "echo/h", "endpoint": "echo", "maxMessageSize": 16777216}"#,
    )
    .write("echo/h.js", "exports.onMessage = (m) => m;");
    let mut arguments = vec!["--no-watch"];
    arguments.extend_from_slice(options);
    let server = Server::start_with(ws.path(), &arguments);
    (ws, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_1_to_10_pass() {
    let (_ws, server) = echo_server(&[]);
    let report = kosoku(
        server.ws_url("echo"),
        &["-x", "12.*", "-x", "13.*"],
        "autobahn",
    )
    .await;
    assert!(
        report.cases >= 300,
        "only {} cases ran:\n{}",
        report.cases,
        report.printed
    );
    assert!(
        report.failures.is_empty(),
        "failed cases: {:?}",
        report.failures
    );
}

// Every message is compressed here (--compression-min-bytes 0). With the default minimum (256
// bytes), the echoes of the 16- and 64-byte cases (x.y.1 and x.y.2, 24 cases) come back
// uncompressed, which RFC 7692 allows per message, and kosoku reports them as ERROR with "Strings
// must be encoded before hashing": a TypeError raised in its own Python case code
// (case12_x_x.py hashes each echo), whose runner evidently hands an uncompressed echo over as a
// str. With every message compressed, all 216 cases are OK. Small messages sent uncompressed are
// tested with Python's websockets and Chromium in compression.rs.

/// Runs the cases `selection` against an echo endpoint with `mode` compression: all `expected`
/// of them must be OK (strict).
async fn compression_cases(mode: &str, selection: &str, expected: usize) {
    let (_ws, server) = echo_server(&["--compression", mode, "--compression-min-bytes", "0"]);
    let reports = format!("autobahn-{}", selection.trim_end_matches(".*"));
    let report = kosoku(server.ws_url("echo"), &["-i", selection], &reports).await;
    assert_eq!(
        report.cases, expected,
        "{selection} is {expected} cases:\n{}",
        report.printed
    );
    assert_eq!(
        report.verdicts.get("OK"),
        Some(&expected),
        "every compression case is strict: {:?}",
        report.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_12_pass_with_shared_compression() {
    compression_cases("shared", "12.*", 90).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_13_pass_with_dedicated_compression() {
    compression_cases("dedicated", "13.*", 126).await;
}
