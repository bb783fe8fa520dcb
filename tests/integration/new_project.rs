//! `switchboard new`: a project from a template that passes `check`, type-checks (TypeScript),
//! is served live by a running `serve`, and whose page works in headless Chromium.

use std::path::Path;
use std::process::Command;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

/// Runs `switchboard new ARGS --workspace WORKSPACE`: (success, stdout + stderr).
fn new(workspace: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(binary())
        .arg("new")
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .output()
        .expect("run switchboard new");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn new_projects_pass_check_and_type_check_and_nothing_is_overwritten() {
    let workspace = Workspace::new();
    let (ok, out) = new(workspace.path(), &["greeter"]);
    assert!(ok, "{out}");
    for file in ["greeter.websocket", "greeter-handler.js", "index.html"] {
        assert!(out.contains(file), "{file} not in: {out}");
        assert!(workspace.path().join("greeter").join(file).is_file());
    }
    let (ok, out) = new(
        workspace.path(),
        &["typed", "--endpoint", "typed-feed", "--ts"],
    );
    assert!(ok, "{out}");
    let typed = workspace.path().join("typed");
    assert!(typed.join("TypedFeedWebsocket.ts").is_file(), "{out}");
    let (code, report) = run_check(workspace.path());
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("2 endpoint(s), 0 problem(s)"), "{report}");
    let (typed_ok, errors) = crate::typescript::type_check(&typed);
    assert!(typed_ok, "tsc --noEmit on the new project: {errors}");

    // Nothing that exists is overwritten: not a project's files, not an endpoint's name.
    let handler = workspace.path().join("greeter/greeter-handler.js");
    std::fs::write(&handler, "exports.onMessage = () => 'mine';").unwrap();
    let (ok, out) = new(workspace.path(), &["greeter"]);
    assert!(!ok && out.contains("exists already"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&handler).unwrap(),
        "exports.onMessage = () => 'mine';"
    );
    let (ok, out) = new(workspace.path(), &["other", "--endpoint", "greeter"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("endpoint \"greeter\" exists already, declared in greeter/greeter.websocket"),
        "{out}"
    );
    assert!(!workspace.path().join("other").exists());
    let (ok, out) = new(workspace.path(), &["../escape"]);
    assert!(!ok && out.contains("cannot be a project name"), "{out}");
}

#[tokio::test]
async fn a_running_serve_picks_up_a_new_project_and_its_page_works_in_chromium() {
    let workspace = Workspace::new();
    let server = Server::start(workspace.path());
    let (ok, out) = new(workspace.path(), &["hello"]);
    assert!(ok, "{out}");
    server
        .stderr
        .wait_for("the new endpoint to be served", |line| {
            line.contains("hello is served")
        });

    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/services/web/hello/", server.address))
        .await;
    let log = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              await waitFor("the socket to open", () => document.getElementById("status").textContent === "connected");
              await waitFor("the welcome", () => document.getElementById("log").textContent.includes("welcome"));
              document.getElementById("text").value = "hi there";
              document.getElementById("send").click();
              await waitFor("the reply", () => document.getElementById("log").textContent.includes('hello got "hi there"'));
              return document.getElementById("log").textContent;
            }})()"#
        ))
        .await;
    assert!(log.as_str().unwrap().contains("→ hi there"), "{log}");
    server
        .stderr
        .wait_for("the handler's log of the connection", |line| {
            line.contains("opened from 127.0.0.1")
        });
}
