//! Headless Chromium, driven over the DevTools protocol, uses the chat sample's page.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Chromium as installed by the test command (`CHROMIUM` overrides the path).
fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// A headless Chromium with a DevTools endpoint; killed when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    pub devtools_url: String,
}

impl Browser {
    pub fn launch() -> Browser {
        Self::launch_with(&[])
    }

    pub fn launch_with(extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // Chromium puts its singleton socket in a directory of its own under TMPDIR and removes
        // it only on a clean exit; killed, it would leave one in /tmp per run. Under the
        // profile, it goes when the profile does.
        let scratch = profile.path().join("tmp");
        std::fs::create_dir(&scratch).unwrap();
        let path = chromium_path();
        let mut child = Command::new(&path)
            .env("TMPDIR", &scratch)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Chromium at {path} ({e}); the test command installs it (scripts/test.sh)"));
        let stderr = child.stderr.take().unwrap();
        let (found, url) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = found.send(line[at..].trim().to_string());
                }
            }
        });
        let devtools_url = url
            .recv_timeout(TIMEOUT)
            .expect("Chromium did not print its DevTools URL");
        Browser {
            child,
            _profile: profile,
            devtools_url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools protocol session on one page.
pub struct Page {
    socket: Client,
    session: String,
    next_id: u64,
}

impl Page {
    pub async fn open(browser: &Browser) -> Page {
        let socket = connect(&browser.devtools_url).await;
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = page
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        page.session = attached["sessionId"].as_str().unwrap().to_string();
        page.call("Page.enable", json!({})).await;
        page
    }

    /// Sends a command and returns its result, skipping events.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let reply: Value = serde_json::from_str(&next_text(&mut self.socket).await).unwrap();
            if reply["id"] == json!(id) {
                if let Some(error) = reply.get("error") {
                    panic!("{method} failed: {error}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Navigates and waits for the page's load event.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        loop {
            let event: Value = serde_json::from_str(&next_text(&mut self.socket).await).unwrap();
            if event["method"] == "Page.loadEventFired" {
                return;
            }
        }
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("page script failed: {exception}");
        }
        result["result"]["value"].clone()
    }
}

/// In-page helper: resolves when `predicate()` holds, re-checking on every DOM change.
pub const WAIT_FOR: &str = r#"
const waitFor = (what, predicate) => new Promise((resolve, reject) => {
  if (predicate()) return resolve();
  const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}: ${document.body.innerText}`)), 15000);
  const observer = new MutationObserver(() => {
    if (predicate()) { observer.disconnect(); clearTimeout(timer); resolve(); }
  });
  observer.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
});
"#;

/// The chat's next message to a member, past the clock its service sends every 10 s (a tick
/// can fall anywhere in a slow run).
async fn next_chat_message(member: &mut Client) -> Value {
    loop {
        let message: Value = serde_json::from_str(&next_text(member).await).unwrap();
        if message["event"] != "Chat_Time" {
            return message;
        }
    }
}

#[tokio::test]
async fn chat_page_in_headless_chromium_sends_and_receives() {
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    let server = Server::start(&projects);
    // A second member, outside the browser, sees what the page sends.
    let mut watcher = server.connect("chat").await;
    let _own_join = next_chat_message(&mut watcher).await;

    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/services/web/chat/", server.address))
        .await;
    let log = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              await waitFor("the socket to open", () => document.getElementById("status").textContent === "connected");
              await waitFor("our join", () => document.getElementById("log").textContent.includes("joined"));
              document.getElementById("text").value = "hello from chromium";
              document.getElementById("send").click();
              await waitFor("the message to come back", () => document.getElementById("log").textContent.includes("me: hello from chromium"));
              return document.getElementById("log").textContent;
            }})()"#
        ))
        .await;
    assert!(
        log.as_str().unwrap().contains("me: hello from chromium"),
        "{log}"
    );

    let joined = next_chat_message(&mut watcher).await;
    assert_eq!(joined["type"], "joined");
    let message = next_chat_message(&mut watcher).await;
    assert_eq!(message["type"], "message");
    assert_eq!(message["text"], "hello from chromium");
}
