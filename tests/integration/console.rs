//! The web console at `/`, in headless Chromium against the real binary: the live overview, an
//! endpoint page's test client, handler log, connections and disconnect, a broken handler's
//! location; and who may use it (loopback, token, `--no-console`).

use std::time::Duration;

use serde_json::Value;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

/// A handler that logs every message and answers it.
const TALKER: &str = r#"
exports.onMessage = (message, conn) => {
  if (typeof message !== "string") return message; // binary comes back as it came
  console.log(`heard ${message} from ${conn.id}`);
  return `reply to ${message}`;
};
"#;

fn talker_workspace() -> Workspace {
    let workspace = Workspace::new();
    workspace.endpoint("app", "talk", "app/talk.js");
    workspace.write("app/talk.js", TALKER);
    workspace
}

/// Runs `script` (an async function body using waitFor) in the page; returns its value.
async fn run(page: &mut Page, script: &str) -> Value {
    page.eval(&format!("(async () => {{ {WAIT_FOR}\n{script} }})()"))
        .await
}

#[tokio::test]
async fn the_overview_lists_the_sample_endpoints_and_counts_change_live() {
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    let server = Server::start_with(&projects, &["--no-watch"]);
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/", server.address)).await;
    let names = run(
        &mut page,
        r#"await waitFor("the live table", () => document.querySelector("tr[data-endpoint]"));
           await waitFor("the feed", () => document.getElementById("feed-status").textContent === "live");
           return [...document.querySelectorAll("tr[data-endpoint]")].map((row) => row.dataset.endpoint);"#,
    )
    .await;
    assert_eq!(
        names,
        serde_json::json!(["chat", "echo", "my-endpoint", "order-ws"])
    );

    // A client connects to echo and keeps sending: the echo row's open count and rates change.
    let mut client = server.connect("echo").await;
    let sending = tokio::spawn(async move {
        for i in 0.. {
            assert_eq!(ask(&mut client, &format!("m{i}")).await, format!("m{i}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            if i > 3_000 {
                break;
            }
        }
    });
    let counts = run(
        &mut page,
        r#"const cell = (field) => document.querySelector(`tr[data-endpoint="echo"] td[data-field="${field}"]`).textContent;
           await waitFor("one connection open", () => cell("connections") === "1");
           await waitFor("messages per second", () => cell("in") !== "0");
           return [cell("connections"), cell("in"), cell("out")];"#,
    )
    .await;
    assert_eq!(counts[0], "1", "{counts}");
    sending.abort();
    let _ = sending.await;
    run(
        &mut page,
        r#"await waitFor("the connection gone", () =>
             document.querySelector(`tr[data-endpoint="echo"] td[data-field="connections"]`).textContent === "0");
           return true;"#,
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_page_talks_shows_the_handler_log_and_disconnects_a_connection() {
    let workspace = talker_workspace();
    let server = Server::start(workspace.path());
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/console/endpoint/talk", server.address))
        .await;

    // The page's test client connects, sends, and shows the reply; the handler's console.log
    // appears in the page's log within a second of the send.
    let result = run(
        &mut page,
        r#"await waitFor("the feed", () => document.getElementById("feed-status").textContent === "live");
           document.getElementById("tc-connect").click();
           await waitFor("the test client to connect", () => document.getElementById("tc-status").textContent.startsWith("connected"));
           document.getElementById("tc-text").value = "ping";
           const sent = performance.now();
           document.getElementById("tc-send").click();
           await waitFor("the reply", () => document.getElementById("tc-transcript").textContent.includes("reply to ping"));
           await waitFor("the handler's log line", () => document.getElementById("log").textContent.includes("heard ping from"));
           return { logAfterMs: performance.now() - sent,
                    sent: [...document.querySelectorAll('#tc-transcript .msg.out .body')].map((e) => e.textContent) };"#,
    )
    .await;
    let after = result["logAfterMs"].as_f64().unwrap();
    assert!(after < 1000.0, "the log line came after {after} ms");
    assert_eq!(result["sent"], serde_json::json!(["ping"]), "{result}");

    // Binary, as hex, comes back as hex.
    let binary = run(
        &mut page,
        r#"document.getElementById("tc-mode").value = "hex";
           document.getElementById("tc-text").value = "de ad be ef";
           document.getElementById("tc-send").click();
           const received = () => [...document.querySelectorAll('#tc-transcript .msg.in .body')].map((e) => e.textContent);
           await waitFor("the binary echo", () => received().includes("binary: de ad be ef"));
           return true;"#,
    )
    .await;
    assert_eq!(binary, true);

    // A client outside the page shows up in the connections list; the page disconnects it with
    // the code and reason given.
    let mut outside = server.connect("talk").await;
    assert_eq!(ask(&mut outside, "hi").await, "reply to hi");
    let id: u64 = {
        let state: Value = serde_json::from_str(&server.get("/console/state").await.body).unwrap();
        assert_eq!(state["endpoints"][0]["connections"], 2, "{state}");
        let list = run(
            &mut page,
            r#"await waitFor("two connections", () => document.querySelectorAll('#connections tr[data-id]').length === 2);
               return [...document.querySelectorAll('#connections tr[data-id]')].map((row) => Number(row.dataset.id));"#,
        )
        .await;
        let counted = run(
            &mut page,
            r#"await waitFor("the messages counted", () => [...document.querySelectorAll('#connections td[data-field="in"]')].some((td) => td.textContent === "1"));
               return [...document.querySelectorAll('#connections tr[data-id]')].map((row) => [row.querySelector('[data-field="in"]').textContent, row.querySelector('[data-field="out"]').textContent]);"#,
        )
        .await;
        // The page's client sent 2 messages and got 2 replies; the outside one 1 and 1.
        assert_eq!(
            counted,
            serde_json::json!([["2", "2"], ["1", "1"]]),
            "{counted}"
        );
        // The outside client is the newer one.
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .max()
            .unwrap()
    };
    run(
        &mut page,
        &format!(
            r#"document.querySelector('#connections tr[data-id="{id}"]').click();
               await waitFor("the selection", () => document.getElementById("act-id").textContent === "{id}");
               document.getElementById("act-code").value = "4321";
               document.getElementById("act-reason").value = "bye from the console";
               document.getElementById("act-disconnect").click();
               await waitFor("the answer", () => document.getElementById("act-result").textContent !== "");
               return document.getElementById("act-result").textContent;"#
        ),
    )
    .await;
    expect_close(&mut outside, 4321, "bye from the console").await;
}

#[tokio::test]
async fn a_broken_handler_shows_its_location_and_fixing_it_clears_it() {
    let workspace = talker_workspace();
    let server = Server::start(workspace.path());
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/", server.address)).await;
    run(
        &mut page,
        r#"await waitFor("the live table", () => document.querySelector('tr[data-endpoint="talk"] .badge.ok'));
           return true;"#,
    )
    .await;
    workspace.write(
        "app/talk.js",
        "exports.onMessage = (m) => {\n  return m +;\n};\n",
    );
    let shown = run(
        &mut page,
        r#"await waitFor("the error", () => document.querySelector('tr[data-endpoint="talk"] .error-text'));
           return document.querySelector('tr[data-endpoint="talk"] .error-text').textContent;"#,
    )
    .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.starts_with("app/talk.js:2:"), "{shown}");
    let reloads = run(
        &mut page,
        r#"await waitFor("the failed reload", () => document.getElementById("reloads").textContent.includes("failed"));
           return document.getElementById("reloads").textContent;"#,
    )
    .await;
    assert!(
        reloads.as_str().unwrap().contains("app/talk.js"),
        "{reloads}"
    );
    workspace.write("app/talk.js", TALKER);
    run(
        &mut page,
        r#"await waitFor("the error to clear", () => !document.querySelector('tr[data-endpoint="talk"] .error-text')
             && document.querySelector('tr[data-endpoint="talk"] .badge.ok'));
           return true;"#,
    )
    .await;
}

/// `curl`-like GET with extra headers: (status, body).
async fn get_with(address: &str, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        // Until the server closes, or (the feed streams) its first event.
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buffer[..n]);
            if String::from_utf8_lossy(&response).contains("event: ") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn off_loopback_the_console_needs_a_token_and_no_console_turns_it_off() {
    let workspace = talker_workspace();
    // Not only on loopback, no token: off (the endpoints are served as ever).
    let open = Server::start_with(workspace.path(), &["--listen", "0.0.0.0:0"]);
    let (status, body) = get_with(&open.address, "/", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("the console is off"), "{body}");
    // Awaited: the log line may be read after the request was answered.
    open.stdout.wait_for("the console-off notice", |line| {
        line.contains("the console is off")
    });
    let mut client = connect(&format!("ws://{}/websockets/v4/service/talk", open.address)).await;
    assert_eq!(ask(&mut client, "x").await, "reply to x");

    // With a token: every console request and the feed need it.
    let guarded = Server::start_with_env(
        workspace.path(),
        &["--listen", "0.0.0.0:0"],
        &[("SWITCHBOARD_CONSOLE_TOKEN", "t0ken")],
    );
    for path in [
        "/",
        "/console/state",
        "/console/console.js",
        "/console/endpoint/talk",
    ] {
        let (status, body) = get_with(&guarded.address, path, "").await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    let (status, body) = get_with(&guarded.address, "/console/feed", "").await;
    assert_eq!(status, 401, "the feed opened without the token: {body}");
    assert!(!body.contains("event: "), "{body}");
    let (status, _) = get_with(&guarded.address, "/?token=wrong", "").await;
    assert_eq!(status, 401);
    // The token in the query opens the page and sets a cookie; the cookie opens the feed.
    let (status, body) = get_with(&guarded.address, "/?token=t0ken", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("set-cookie: switchboard_console=t0ken; Path=/; HttpOnly; SameSite=Strict"),
        "{body}"
    );
    let (status, body) = get_with(
        &guarded.address,
        "/console/feed",
        "Cookie: switchboard_console=t0ken\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: series"), "{body}");
    let (status, _) = get_with(
        &guarded.address,
        "/console/state",
        "Authorization: Bearer t0ken\r\n",
    )
    .await;
    assert_eq!(status, 200);
    // --no-console: off on loopback too.
    let off = Server::start_with(workspace.path(), &["--no-console"]);
    let (status, body) = get_with(&off.address, "/", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--no-console"), "{body}");
}

#[tokio::test]
async fn console_actions_need_the_consoles_own_origin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let workspace = talker_workspace();
    let server = Server::start(workspace.path());
    let mut client = server.connect("talk").await;
    assert_eq!(ask(&mut client, "a").await, "reply to a");
    let state: Value = serde_json::from_str(&server.get("/console/state").await.body).unwrap();
    assert_eq!(state["endpoints"][0]["connections"], 1);
    // The first connection of a server without a broker.
    let id = 1u64;
    let post = |origin: &str| {
        let body = r#"{"code": 4000, "reason": "x"}"#;
        format!(
            "POST /console/connections/{id}/disconnect HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.address,
            body.len()
        )
    };
    for (origin, expected) in [("https://evil.example", "403"), ("", "403")] {
        let mut stream = tokio::net::TcpStream::connect(&server.address)
            .await
            .unwrap();
        stream.write_all(post(origin).as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {expected}")),
            "{response}"
        );
    }
    // The connection is still open and served.
    assert_eq!(ask(&mut client, "b").await, "reply to b");
    let mut stream = tokio::net::TcpStream::connect(&server.address)
        .await
        .unwrap();
    let own = format!("http://{}", server.address);
    stream.write_all(post(&own).as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    expect_close(&mut client, 4000, "x").await;
}
