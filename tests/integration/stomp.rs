//! Dirigible's browser pages (v8 and later) speak STOMP to `/stomp`: Dirigible's own test page in
//! headless Chromium, the real @stomp/stompjs and stomp.js 2.x (over sockjs-client and a plain
//! WebSocket) under Node, raw frames for every rule of the parser, and what Switchboard adds
//! (a STOMP session as a connection of the endpoint whose replies it subscribes to).

use std::path::Path;
use std::process::Command;

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

/// The repository's folder.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A workspace holding Dirigible's test project (page, handler, descriptor) as project
/// `test-project`.
fn dirigible_workspace() -> Workspace {
    let ws = Workspace::new();
    let fixture = repository().join("tests/fixtures/dirigible-test-project/websockets");
    for name in ["test.html", "test-handler.js", "test.websocket"] {
        ws.write(
            &format!("test-project/websockets/{name}"),
            &std::fs::read_to_string(fixture.join(name)).unwrap(),
        );
    }
    ws
}

#[tokio::test]
async fn dirigibles_own_test_page_in_headless_chromium() {
    let ws = dirigible_workspace();
    let server = Server::start(ws.path());
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!(
        "http://{}/services/web/test-project/websockets/test.html",
        server.address
    ))
    .await;
    let response = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              document.getElementById("connectBtn").click();
              await waitFor("the connection", () => document.getElementById("disconnectBtn").disabled === false);
              document.getElementById("fromInput").value = "Test user";
              document.getElementById("textInput").value = "A test message";
              document.getElementById("sendMessage").click();
              await waitFor("the reply", () => document.getElementById("response").textContent.includes("Hello"));
              return document.getElementById("response").textContent;
            }})()"#
        ))
        .await;
    let response = response.as_str().unwrap();
    let time = response
        .strip_prefix("Test user: Hello from WebSocket! [A test message] (")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected reply paragraph: {response:?}"));
    assert!(
        time.len() == 5 && time.as_bytes()[2] == b':',
        "not HH:mm: {time:?}"
    );
    server.stderr.wait_for("the handler's log line", |l| {
        l.contains("Message received: A test message, from: Test user")
    });
}

#[tokio::test]
async fn the_sample_stomp_page_talks_to_the_echo_endpoint() {
    // With compression on, as a production server may run: Chromium offers permessage-deflate
    // and then compresses what it sends (docs/compression.md, STOMP pages).
    let server = Server::start_with(
        &repository().join("projects"),
        &["--compression", "shared", "--compression-min-bytes", "0"],
    );
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!(
        "http://{}/services/web/echo/stomp.html",
        server.address
    ))
    .await;
    let log = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              await waitFor("the session", () => document.getElementById("send").disabled === false);
              document.getElementById("from").value = "ann";
              document.getElementById("text").value = "over STOMP";
              document.getElementById("send").click();
              await waitFor("the echo", () => document.getElementById("log").textContent.includes("ann: over STOMP ("));
              return document.getElementById("log").textContent;
            }})()"#
        ))
        .await;
    let log = log.as_str().unwrap();
    assert!(log.starts_with("connected\nann: over STOMP ("), "{log}");
    for counter in [
        "switchboard_compression_sent_wire_bytes_total",
        "switchboard_compression_received_wire_bytes_total",
    ] {
        let bytes = server
            .metric(&format!("{counter}{{endpoint=\"/stomp\"}}"))
            .await;
        assert!(
            bytes > 0.0,
            "{counter}: {bytes}: the session was not compressed"
        );
    }
}

/// A Node script of tests/node, run to its end (it bounds itself): its JSON result.
fn node(script: &str, args: &[&str]) -> Value {
    let directory = repository().join("tests/node");
    assert!(
        directory.join("node_modules/@stomp/stompjs").exists(),
        "tests/node/node_modules is missing: scripts/setup.sh --test installs the tests' Node packages"
    );
    let output = Command::new("node")
        .arg(directory.join(script))
        .args(args)
        .current_dir(&directory)
        .output()
        .expect("run node (scripts/setup.sh --test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

#[tokio::test]
async fn the_real_stompjs_client_under_node() {
    let ws = dirigible_workspace();
    let server = Server::start(ws.path());
    let url = format!("ws://{}/stomp", server.address);
    let result =
        tokio::task::spawn_blocking(move || node("stompjs-session.mjs", &[&url, "test-websocket"]))
            .await
            .unwrap();
    assert_eq!(result["version"], "1.2", "{result}");
    assert_eq!(result["heartBeat"], "0,0");
    assert_eq!(result["protocol"], "v12.stomp");
    assert_eq!(result["replies"][0]["from"], "Node user");
    assert_eq!(
        result["replies"][0]["text"],
        "Hello from WebSocket! [from stompjs]"
    );
    assert!(
        result["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("message to test-websocket not read: the body must be JSON"),
        "{result}"
    );
    assert_eq!(result["topic"], serde_json::json!(["news for everyone"]));
    assert_eq!(result["receipt"], true, "deactivate got its RECEIPT");
    assert_eq!(result["deactivated"], true);
    // The handler heard the unreadable message too.
    server.stderr.wait_for("onError", |l| {
        l.contains("Error: message to test-websocket not read")
    });
}

#[tokio::test]
async fn stomp_js_2_over_sockjs_and_over_a_plain_websocket() {
    let ws = dirigible_workspace();
    let server = Server::start(ws.path());
    for transport in ["sockjs", "ws"] {
        let base = format!("http://{}", server.address);
        let result = tokio::task::spawn_blocking(move || {
            node("stomp2-session.cjs", &[&base, "test-websocket", transport])
        })
        .await
        .unwrap();
        assert_eq!(result["version"], "1.1", "{result}");
        assert_eq!(result["replies"][0]["text"], "Hello from WebSocket! [hi]");
        assert_eq!(result["replies"][0]["from"], "old page");
        // 40,000 characters sent in 16 KiB pieces, read as one frame.
        assert_eq!(result["replies"][1]["text"], "40024 characters");
        assert_eq!(result["disconnected"], true);
    }
    let info = server.get("/stomp/info").await;
    assert_eq!(info.status, 200);
    let info: Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["cookie_needed"], false);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    assert!(info["entropy"].is_u64());
}

/// A STOMP session over a raw WebSocket, frame by frame.
pub struct Stomp {
    /// The socket.
    socket: Client,
}

impl Stomp {
    /// Opens the socket, offering `protocols`; returns it with the protocol the server chose.
    async fn open(server: &Server, protocols: Option<&str>) -> (Stomp, Option<String>) {
        let mut request = format!("ws://{}/stomp", server.address)
            .into_client_request()
            .unwrap();
        if let Some(protocols) = protocols {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(protocols).unwrap(),
            );
        }
        let (socket, response) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("connect timed out")
                .expect("connect");
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        (Stomp { socket }, chosen)
    }

    /// Opens `/stomp?{query}` with `origin` and connects with STOMP 1.2.
    async fn connected_as(server: &Server, query: &str, origin: Option<&str>) -> Stomp {
        let mut request = format!("ws://{}/stomp?{query}", server.address)
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("Origin", HeaderValue::from_str(origin).unwrap());
        }
        let (socket, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timed out")
            .expect("connect");
        let mut stomp = Stomp { socket };
        stomp.send("CONNECT\naccept-version:1.2\n\n\0").await;
        assert!(stomp.frame().await.starts_with("CONNECTED\n"));
        stomp
    }

    /// Subscribes to an endpoint's replies and errors, and waits for the receipt.
    async fn subscribe_to(&mut self, endpoint: &str) {
        self.send(&format!(
            "SUBSCRIBE\nid:errors\ndestination:/user/queue/errors/{endpoint}\n\n\0SUBSCRIBE\nid:replies\ndestination:/user/queue/reply/{endpoint}\nreceipt:subscribed\n\n\0"
        ))
        .await;
    }

    /// Sends Dirigible's body to an endpoint.
    async fn say(&mut self, endpoint: &str, text: &str) {
        self.send(&format!(
            "SEND\ndestination:/ws/stomp/{endpoint}\n\n{{\"from\":\"t\",\"text\":\"{text}\"}}\0"
        ))
        .await;
    }

    /// Opens and connects with STOMP 1.2.
    pub async fn connected(server: &Server) -> Stomp {
        let (mut stomp, _) = Stomp::open(server, Some("v12.stomp")).await;
        stomp
            .send("CONNECT\naccept-version:1.2\nhost:x\n\n\0")
            .await;
        assert!(stomp.frame().await.starts_with("CONNECTED\n"));
        stomp
    }

    pub async fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// The next frame, as text.
    pub async fn frame(&mut self) -> String {
        match next_message(&mut self.socket).await {
            Message::Text(text) => text.to_string(),
            Message::Binary(data) => String::from_utf8_lossy(&data).to_string(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be an ERROR; then the close, with its code.
    async fn error_then_close(&mut self) -> (String, u16) {
        let error = self.frame().await;
        assert!(error.starts_with("ERROR\n"), "{error}");
        match next_message(&mut self.socket).await {
            Message::Close(Some(frame)) => (error, u16::from(frame.code)),
            other => panic!("expected a close after the ERROR, got {other:?}"),
        }
    }

    /// The body of a frame.
    pub fn body(frame: &str) -> &str {
        let body = frame.split_once("\n\n").map(|(_, b)| b).unwrap_or("");
        body.strip_suffix('\0').unwrap_or(body)
    }
}

/// A workspace with an echo endpoint `e` that throws on "throw".
fn echo_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m, from) => { if (m === "throw") throw new TypeError("asked to throw"); return `${from} said ${m}`; };"#,
    );
    ws
}

#[tokio::test]
async fn frames_versions_and_subprotocols() {
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    // The newest subprotocol offered is echoed; none offered, none chosen.
    let (_, chosen) = Stomp::open(&server, Some("v10.stomp, v11.stomp")).await;
    assert_eq!(chosen.as_deref(), Some("v11.stomp"));
    let (_, chosen) = Stomp::open(&server, None).await;
    assert_eq!(chosen, None);

    // The newest common version; 1.0 without accept-version; none in common: ERROR.
    for (accept, version) in [
        ("accept-version:1.0,1.1\n", "1.1"),
        ("", "1.0"),
        ("accept-version:1.2\n", "1.2"),
    ] {
        let (mut stomp, _) = Stomp::open(&server, None).await;
        stomp.send(&format!("CONNECT\n{accept}\n\0")).await;
        let connected = stomp.frame().await;
        assert!(
            connected.contains(&format!("\nversion:{version}\n")),
            "{connected}"
        );
        assert!(connected.contains("\nheart-beat:0,0\n"), "{connected}");
    }
    let (mut stomp, _) = Stomp::open(&server, None).await;
    stomp.send("CONNECT\naccept-version:2.0\n\n\0").await;
    let unsupported = stomp.frame().await;
    assert!(
        unsupported.starts_with("ERROR\nversion:1.0,1.1,1.2\n"),
        "{unsupported}"
    );

    // Anything before CONNECT.
    let (mut stomp, _) = Stomp::open(&server, None).await;
    stomp.send("SEND\ndestination:/ws/stomp/e\n\n{}\0").await;
    let (error, code) = stomp.error_then_close().await;
    assert!(
        error.contains("message:expected CONNECT (or STOMP) as the first frame, got SEND"),
        "{error}"
    );
    assert_eq!(code, 1002);

    // CR LF line ends and heart-beats (bare line ends) before and between frames; several frames
    // in one message; one frame split over three messages.
    let (mut stomp, _) = Stomp::open(&server, None).await;
    stomp
        .send("\r\n\nCONNECT\r\naccept-version:1.2\r\n\r\n\0\n\nSUBSCRIBE\r\nid:0\r\ndestination:/user/queue/reply/e\r\nreceipt:s\r\n\r\n\0")
        .await;
    assert!(stomp.frame().await.starts_with("CONNECTED\n"));
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:s\n\n\0");
    for piece in [
        "SEND\ndestination:/ws",
        "/stomp/e\n\n{\"from\": \"split\", ",
        "\"text\": \"three pieces\"}\0",
    ] {
        stomp.send(piece).await;
    }
    let reply = stomp.frame().await;
    assert!(reply.starts_with("MESSAGE\ndestination:/user/queue/reply/e\ncontent-type:application/json\nsubscription:0\nmessage-id:"), "{reply}");
    let envelope: Value = serde_json::from_str(Stomp::body(&reply)).unwrap();
    assert_eq!(envelope["from"], "split");
    assert_eq!(envelope["text"], "split said three pieces");

    // The first of repeated headers counts.
    stomp
        .send("SEND\ndestination:/ws/stomp/e\ndestination:/nowhere\n\n{\"from\":\"dup\",\"text\":\"first wins\"}\0")
        .await;
    let reply = stomp.frame().await;
    assert!(
        Stomp::body(&reply).contains("dup said first wins"),
        "{reply}"
    );

    // A handler that throws, and an endpoint that does not exist, reply with the error text.
    stomp
        .send("SEND\ndestination:/ws/stomp/e\n\n{\"from\":\"me\",\"text\":\"throw\"}\0")
        .await;
    let reply = stomp.frame().await;
    let envelope: Value = serde_json::from_str(Stomp::body(&reply)).unwrap();
    assert_eq!(
        envelope["text"],
        "TypeError: asked to throw (at p/h.js:1:61)"
    );
    stomp
        .send("SUBSCRIBE\nid:1\ndestination:/user/queue/reply/nope\n\n\0SEND\ndestination:/ws/stomp/nope\n\n{\"from\":\"me\",\"text\":\"x\"}\0")
        .await;
    let reply = stomp.frame().await;
    let envelope: Value = serde_json::from_str(Stomp::body(&reply)).unwrap();
    assert_eq!(
        envelope["text"],
        "Websocket for endpoint does not exist: nope"
    );

    // Transactions and acknowledgements are accepted, each with its receipt.
    for command in ["BEGIN", "ACK", "NACK", "COMMIT", "ABORT"] {
        stomp
            .send(&format!(
                "{command}\ntransaction:t\nid:1\nreceipt:{command}\n\n\0"
            ))
            .await;
        assert_eq!(
            stomp.frame().await,
            format!("RECEIPT\nreceipt-id:{command}\n\n\0")
        );
    }

    // DISCONNECT: its RECEIPT, then the close.
    stomp.send("DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:bye\n\n\0");
    expect_close(&mut stomp.socket, 1000, "").await;
}

#[tokio::test]
async fn bodies_and_escaped_headers_through_the_broker() {
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut subscriber = Stomp::connected(&server).await;
    // A subscription id with a colon, a backslash and a line end, escaped.
    subscriber
        .send("SUBSCRIBE\nid:a\\cb\\\\c\\nd\ndestination:/queue/q\nreceipt:r\n\n\0")
        .await;
    assert_eq!(subscriber.frame().await, "RECEIPT\nreceipt-id:r\n\n\0");
    let mut sender = Stomp::connected(&server).await;
    // A body with NUL bytes, framed by content-length.
    sender
        .send("SEND\ndestination:/queue/q\ncontent-type:text/plain\ncontent-length:5\n\na\0b\0c\0")
        .await;
    let message = subscriber.frame().await;
    assert!(
        message.contains("\nsubscription:a\\cb\\\\c\\nd\n"),
        "{message}"
    );
    assert!(message.contains("\ncontent-length:5\n"), "{message}");
    assert!(message.ends_with("\n\na\0b\0c\0"), "{message:?}");
    // An undefined escape is an error.
    sender.send("SEND\ndestination:/queue/\\q\n\n\0").await;
    let (error, code) = sender.error_then_close().await;
    assert!(error.contains("undefined escape sequence \\q"), "{error}");
    assert_eq!(code, 1002);
}

/// Frames may come in binary WebSocket messages (@stomp/stompjs sends a binary body that way).
#[tokio::test]
async fn frames_in_binary_messages_are_read_as_in_text_ones() {
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut stomp = Stomp::connected(&server).await;
    stomp
        .socket
        .send(Message::binary(
            &b"SUBSCRIBE\nid:0\ndestination:/user/queue/reply/e\nreceipt:r\n\n\0"[..],
        ))
        .await
        .unwrap();
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:r\n\n\0");
    for piece in [
        &b"SEND\ndestination:/ws/stomp/e\n\n{\"from\": \"bin\", "[..],
        &b"\"text\": \"in binary\"}\0"[..],
    ] {
        stomp.socket.send(Message::binary(piece)).await.unwrap();
    }
    let envelope: Value = serde_json::from_str(Stomp::body(&stomp.frame().await)).unwrap();
    assert_eq!(envelope["text"], "bin said in binary");
}

/// A session's first frames are read before its socket moves to its endpoint's thread; a close
/// or a WebSocket-level error among them is answered as it is anywhere else.
#[tokio::test]
async fn a_close_or_an_oversized_message_among_the_first_frames_is_answered() {
    let ws = echo_workspace();
    let server = Server::start_with(ws.path(), &["--max-message-size", "4096"]);
    let mut stomp = Stomp::connected(&server).await;
    stomp
        .socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "leaving".into(),
        })))
        .await
        .unwrap();
    match next_message(&mut stomp.socket).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the close to be answered, got {other:?}"),
    }

    let mut stomp = Stomp::connected(&server).await;
    stomp.send(&"x".repeat(5000)).await;
    expect_close(&mut stomp.socket, 1009, "message too big").await;
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_their_own_session() {
    let ws = echo_workspace();
    let server = Server::start_with(ws.path(), &["--max-message-size", "4096"]);
    let mut bystander = Stomp::connected(&server).await;
    bystander
        .send("SUBSCRIBE\nid:0\ndestination:/user/queue/reply/e\n\n\0")
        .await;

    let mut stomp = Stomp::connected(&server).await;
    stomp.send("hello, is this STOMP?\n\n\0").await;
    let (error, code) = stomp.error_then_close().await;
    assert!(error.contains("message:not a STOMP frame"), "{error}");
    assert_eq!(code, 1002);

    let mut stomp = Stomp::connected(&server).await;
    stomp.send("FLY\n\n\0").await;
    let (error, code) = stomp.error_then_close().await;
    assert!(error.contains("message:unknown command FLY"), "{error}");
    assert_eq!(code, 1002);

    let mut stomp = Stomp::connected(&server).await;
    stomp.send("SEND\ndestination:/ws/stomp/e\n\n").await;
    stomp.send(&"x".repeat(3000)).await;
    stomp.send(&"x".repeat(3000)).await;
    let (error, code) = stomp.error_then_close().await;
    assert!(
        error.contains("message:frame larger than the limit of 4096 bytes"),
        "{error}"
    );
    assert_eq!(code, 1009);

    // Everyone else goes on.
    bystander
        .send("SEND\ndestination:/ws/stomp/e\n\n{\"from\":\"still\",\"text\":\"here\"}\0")
        .await;
    assert!(Stomp::body(&bystander.frame().await).contains("still said here"));
    let mut fresh = Stomp::connected(&server).await;
    fresh.send("DISCONNECT\nreceipt:x\n\n\0").await;
    assert_eq!(fresh.frame().await, "RECEIPT\nreceipt-id:x\n\n\0");
}

/// The handler of the beyond-Dirigible tests: it records opens and closes, and acts on
/// commands sent over STOMP or a raw connection.
const BEYOND_HANDLER: &str = r#"
const websockets = require("net/websockets");
const events = [];
exports.onOpen = (conn) => events.push(`open ${conn.id}`);
exports.onClose = (conn, { code, reason }) => {
  events.push(`close ${conn.id} ${code} ${reason}`);
  websockets.publish("closes", `close ${conn.id} ${code} ${reason}`);
};
exports.onMessage = (message, from) => {
  const [command, argument] = message.split(" ");
  if (command === "events") return JSON.stringify(events);
  if (command === "connections") return JSON.stringify(websockets.getConnections("b").map((c) => c.id));
  if (command === "send") { websockets.send(Number(argument), "pushed"); return "sent"; }
  if (command === "broadcast") return `broadcast to ${websockets.broadcast("b", "to everyone")}`;
  if (command === "publish") return `published to ${websockets.publish("news", "published")}`;
  if (command === "subscribe") { from.subscribe("news"); return "subscribed"; }
  if (command === "disconnect") { websockets.disconnect(Number(argument), 4000, "bye"); return "disconnecting"; }
  if (command === "watch") { from.subscribe("closes"); return "watching"; }
  return `got ${message}`;
};
"#;

#[tokio::test]
async fn a_stomp_session_is_a_connection_of_the_endpoint_it_subscribes_to() {
    let ws = Workspace::new();
    ws.endpoint("p", "b", "p/h").write("p/h.js", BEYOND_HANDLER);
    let server = Server::start(ws.path());
    let mut raw = server.connect("b").await;
    let events = |text: String| -> Vec<String> { serde_json::from_str(&text).unwrap() };
    let before = events(ask(&mut raw, "events").await);
    assert_eq!(before.len(), 1, "the raw connection's open: {before:?}");

    // SUBSCRIBE to the endpoint's replies: onOpen, and it is listed.
    let mut stomp = Stomp::connected(&server).await;
    stomp
        .send("SUBSCRIBE\nid:r\ndestination:/user/queue/reply/b\nreceipt:1\n\n\0SUBSCRIBE\nid:n\ndestination:/topic/news\nreceipt:2\n\n\0")
        .await;
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:1\n\n\0");
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:2\n\n\0");
    let ids: Vec<u64> = serde_json::from_str(&ask(&mut raw, "connections").await).unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let stomp_id = *ids.iter().max().unwrap();
    assert!(events(ask(&mut raw, "events").await).contains(&format!("open {stomp_id}")));

    // send(id) and broadcast reach it as MESSAGEs in Dirigible's envelope.
    assert_eq!(ask(&mut raw, &format!("send {stomp_id}")).await, "sent");
    let pushed = stomp.frame().await;
    assert!(
        pushed.contains("\ndestination:/user/queue/reply/b\n"),
        "{pushed}"
    );
    let envelope: Value = serde_json::from_str(Stomp::body(&pushed)).unwrap();
    assert_eq!(
        (envelope["from"].as_str(), envelope["text"].as_str()),
        (Some("b"), Some("pushed"))
    );
    send_text(&mut raw, "broadcast").await;
    assert_eq!(next_text(&mut raw).await, "to everyone");
    assert_eq!(next_text(&mut raw).await, "broadcast to 2");
    let envelope: Value = serde_json::from_str(Stomp::body(&stomp.frame().await)).unwrap();
    assert_eq!(envelope["text"], "to everyone");

    // publish(topic) reaches STOMP subscribers of /topic/{topic} and raw subscribers alike; a
    // STOMP SEND to /topic/{topic} reaches the raw ones.
    assert_eq!(ask(&mut raw, "subscribe").await, "subscribed");
    send_text(&mut raw, "publish").await;
    assert_eq!(next_text(&mut raw).await, "published");
    assert_eq!(next_text(&mut raw).await, "published to 2");
    let published = stomp.frame().await;
    assert!(
        published.contains("\ndestination:/topic/news\n")
            && published.contains("\nsubscription:n\n"),
        "{published}"
    );
    assert_eq!(Stomp::body(&published), "published");
    stomp
        .send("SEND\ndestination:/topic/news\n\nfrom stomp\0")
        .await;
    assert_eq!(next_text(&mut raw).await, "from stomp");
    assert_eq!(Stomp::body(&stomp.frame().await), "from stomp");

    // UNSUBSCRIBE: onClose once; subscribing again is a new connection.
    stomp.send("UNSUBSCRIBE\nid:r\nreceipt:3\n\n\0").await;
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:3\n\n\0");
    let closes = |all: &[String], id: u64| {
        all.iter()
            .filter(|e| e.starts_with(&format!("close {id} ")))
            .cloned()
            .collect::<Vec<_>>()
    };
    let now = events(ask(&mut raw, "events").await);
    assert_eq!(
        closes(&now, stomp_id),
        vec![format!("close {stomp_id} 1000 unsubscribed")]
    );
    stomp
        .send("SUBSCRIBE\nid:r2\ndestination:/user/queue/reply/b\nreceipt:4\n\n\0")
        .await;
    assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:4\n\n\0");
    let ids: Vec<u64> = serde_json::from_str(&ask(&mut raw, "connections").await).unwrap();
    let second = *ids.iter().max().unwrap();
    assert!(second > stomp_id);

    // From here on the raw connection hears every close (onClose publishes it).
    assert_eq!(ask(&mut raw, "watch").await, "watching");

    // disconnect(id) closes the session: an ERROR saying why, then the close with its code; its
    // handler hears onClose once.
    send_text(&mut raw, &format!("disconnect {second}")).await;
    assert_eq!(next_text(&mut raw).await, "disconnecting");
    let (error, code) = stomp.error_then_close().await;
    // (A colon in a header is escaped.)
    assert!(
        error.contains("message:endpoint b closed the connection (4000)\\c bye"),
        "{error}"
    );
    assert_eq!(code, 4000);
    drop(stomp);
    assert!(next_text(&mut raw)
        .await
        .starts_with(&format!("close {second} ")));

    // A session whose socket is simply dropped: onClose once, 1006.
    let mut dropped = Stomp::connected(&server).await;
    dropped
        .send("SUBSCRIBE\nid:r\ndestination:/user/queue/reply/b\nreceipt:5\n\n\0")
        .await;
    assert_eq!(dropped.frame().await, "RECEIPT\nreceipt-id:5\n\n\0");
    let ids: Vec<u64> = serde_json::from_str(&ask(&mut raw, "connections").await).unwrap();
    let third = *ids.iter().max().unwrap();
    drop(dropped);
    assert_eq!(next_text(&mut raw).await, format!("close {third} 1006 "));
    let all = events(ask(&mut raw, "events").await);
    for id in [stomp_id, second, third] {
        assert_eq!(closes(&all, id).len(), 1, "{id}: {all:?}");
    }
}

#[tokio::test]
async fn shutdown_closes_stomp_sessions_with_1001() {
    let ws = echo_workspace();
    let mut server = Server::start(ws.path());
    let mut stomp = Stomp::connected(&server).await;
    server.signal("TERM");
    expect_close(&mut stomp.socket, 1001, "server shutting down").await;
    assert!(server.wait_exit().success());
}

/// Where the client library is served.
fn library_paths() -> [&'static str; 2] {
    [
        "/webjars/stomp__stompjs/esm6/index.js",
        "/switchboard/stomp.js",
    ]
}

#[tokio::test]
async fn the_client_module_is_served_where_dirigible_pages_import_it() {
    let ws = Workspace::new();
    let server = Server::start(ws.path());
    for path in library_paths() {
        let response = server.get(path).await;
        assert_eq!(response.status, 200, "{path}");
        assert!(response.body.contains("export class Client"), "{path}");
    }
}

#[tokio::test]
async fn replies_go_to_the_sender_only() {
    // Two sessions subscribed to one endpoint's replies: each gets its own.
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut first = Stomp::connected(&server).await;
    let mut second = Stomp::connected(&server).await;
    for stomp in [&mut first, &mut second] {
        stomp
            .send("SUBSCRIBE\nid:0\ndestination:/user/queue/reply/e\nreceipt:s\n\n\0")
            .await;
        assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:s\n\n\0");
    }
    first
        .send("SEND\ndestination:/ws/stomp/e\n\n{\"from\":\"one\",\"text\":\"a\"}\0")
        .await;
    second
        .send("SEND\ndestination:/ws/stomp/e\n\n{\"from\":\"two\",\"text\":\"b\"}\0")
        .await;
    assert!(Stomp::body(&first.frame().await).contains("one said a"));
    assert!(Stomp::body(&second.frame().await).contains("two said b"));
}

/// An endpoint that admits pages from one origin, with a token, and one connection at a time.
const GUARDED_HANDLER: &str = r#"
const users = [];
exports.onUpgrade = (request) => request.query.token === "let-me-in" ? { user: "ann" } : false;
exports.onOpen = (conn) => { users.push(conn.data.user); };
exports.onMessage = (m, from) => `${from}: ${m} (connected: ${users.join(",")})`;
"#;

#[tokio::test]
async fn origins_on_upgrade_limits_and_metrics_apply_to_stomp() {
    let ws = Workspace::new();
    ws.write(
        "p/guarded.websocket",
        r#"{"handler": "p/h.js", "endpoint": "guarded", "allowedOrigins": ["https://good.example"], "maxConnections": 1}"#,
    )
    .write("p/h.js", GUARDED_HANDLER);
    let server = Server::start_with(ws.path(), &["--max-connections", "6"]);

    // A page from another origin: refused on the endpoint's error queue, its handler not run.
    let mut evil =
        Stomp::connected_as(&server, "token=let-me-in", Some("https://evil.example")).await;
    evil.subscribe_to("guarded").await;
    let refused = evil.frame().await;
    assert!(refused.contains("\nsubscription:errors\n"), "{refused}");
    assert_eq!(
        Stomp::body(&refused),
        "origin https://evil.example is not allowed to connect to endpoint \"guarded\""
    );
    assert_eq!(evil.frame().await, "RECEIPT\nreceipt-id:subscribed\n\n\0");
    evil.say("guarded", "hi").await;
    assert!(
        Stomp::body(&evil.frame().await).starts_with("origin https://evil.example is not allowed")
    );

    // The right origin without the token: onUpgrade refuses.
    let mut anonymous = Stomp::connected_as(&server, "", Some("https://good.example")).await;
    anonymous.subscribe_to("guarded").await;
    assert_eq!(
        Stomp::body(&anonymous.frame().await),
        "refused by onUpgrade"
    );
    assert_eq!(
        anonymous.frame().await,
        "RECEIPT\nreceipt-id:subscribed\n\n\0"
    );

    // With the token: a connection whose data onUpgrade gave; the reply comes back.
    let mut ann =
        Stomp::connected_as(&server, "token=let-me-in", Some("https://good.example")).await;
    ann.subscribe_to("guarded").await;
    assert_eq!(ann.frame().await, "RECEIPT\nreceipt-id:subscribed\n\n\0");
    ann.say("guarded", "hello").await;
    let envelope: Value = serde_json::from_str(Stomp::body(&ann.frame().await)).unwrap();
    assert_eq!(envelope["text"], "t: hello (connected: ann)");

    // maxConnections 1: a second session is refused as a connection of the endpoint.
    let mut second = Stomp::connected_as(&server, "token=let-me-in", None).await;
    second.subscribe_to("guarded").await;
    assert_eq!(
        Stomp::body(&second.frame().await),
        "endpoint guarded has reached its limit of 1 open connections; try again later"
    );

    // Metrics: the STOMP sockets (four open) and the endpoint's connection and traffic.
    assert_eq!(server.metric("switchboard_stomp_sessions").await, 4.0);
    assert_eq!(
        server
            .metric("switchboard_connections_open{endpoint=\"guarded\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("switchboard_messages_received_total{endpoint=\"guarded\"}")
            .await,
        1.0
    );
    // The server's limit (6) counts sockets and links: a fifth socket fills it, the next one is
    // refused before the upgrade.
    let fifth = Stomp::connected_as(&server, "", None).await;
    let (status, body) = connect_with(&format!("ws://{}/stomp", server.address), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("limit of 6 open connections"), "{body}");
    drop((evil, anonymous, ann, second, fifth));
}

/// Endpoint `e` with two instances of `handler` (whose replies read `{from} in {instance} ...`),
/// and two STOMP sessions subscribed to its replies.
async fn two_sessions_on_two_instances(handler: &str) -> (Workspace, Server, Vec<Stomp>) {
    let ws = Workspace::new();
    ws.write(
        "p/e.websocket",
        r#"{"handler": "p/h", "endpoint": "e", "instances": 2}"#,
    )
    .write("p/h.js", handler);
    let server = Server::start(ws.path());
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut stomp = Stomp::connected(&server).await;
        stomp
            .send("SUBSCRIBE\nid:0\ndestination:/user/queue/reply/e\nreceipt:s\n\n\0")
            .await;
        assert_eq!(stomp.frame().await, "RECEIPT\nreceipt-id:s\n\n\0");
        sessions.push(stomp);
    }
    (ws, server, sessions)
}

/// The instance a reply `{from} in {instance} ...` names.
fn instance(reply: &str) -> String {
    reply.split(' ').nth(2).unwrap_or_default().to_string()
}

#[tokio::test]
async fn stomp_sessions_are_spread_over_instances_one_instance_per_session() {
    let (_ws, _server, mut sessions) = two_sessions_on_two_instances(
        r#"const me = Math.random().toString(36).slice(2, 10);
           let seen = 0;
           exports.onMessage = (m, from) => `${from} in ${me} message ${++seen}`;"#,
    )
    .await;
    let first = ask_instance(&mut sessions[0]).await;
    let second = ask_instance(&mut sessions[1]).await;
    let first_again = ask_instance(&mut sessions[0]).await;
    // Two sessions, two instances; a session keeps its instance (and that instance's state).
    assert_ne!(instance(&first), instance(&second), "{first} / {second}");
    assert_eq!(
        instance(&first),
        instance(&first_again),
        "{first} / {first_again}"
    );
    assert!(first.ends_with("message 1"), "{first}");
    assert!(second.ends_with("message 1"), "{second}");
    assert!(first_again.ends_with("message 2"), "{first_again}");
}

#[tokio::test]
async fn a_stomp_sessions_on_upgrade_runs_in_the_instance_its_messages_run_in() {
    let (_ws, _server, mut sessions) = two_sessions_on_two_instances(
        r#"const me = Math.random().toString(36).slice(2, 10);
           let upgrades = 0;
           exports.onUpgrade = () => { upgrades++; return true; };
           exports.onMessage = (m, from) => `${from} in ${me} after ${upgrades} upgrade(s)`;"#,
    )
    .await;
    let first = ask_instance(&mut sessions[0]).await;
    let second = ask_instance(&mut sessions[1]).await;
    assert_ne!(instance(&first), instance(&second), "{first} / {second}");
    // Each instance's module state saw the upgrade of the session whose messages it runs.
    assert!(first.ends_with("after 1 upgrade(s)"), "{first}");
    assert!(second.ends_with("after 1 upgrade(s)"), "{second}");
}

/// SENDs to endpoint `e` and returns the reply's text.
async fn ask_instance(stomp: &mut Stomp) -> String {
    stomp
        .send("SEND\ndestination:/ws/stomp/e\n\n{\"from\":\"s\",\"text\":\"x\"}\0")
        .await;
    let frame = stomp.frame().await;
    let body = Stomp::body(&frame);
    let reply: serde_json::Value = serde_json::from_str(body).expect("a reply envelope");
    reply["text"].as_str().unwrap_or_default().to_string()
}
