//! permessage-deflate (RFC 7692): negotiated with clients Switchboard's authors did not write
//! (Python's `websockets`, headless Chromium), compressed on the wire (read from the byte
//! counters and from frames' RSV1 bit), bounded when inflating, and offered by outbound clients.

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{Browser, Page};
use crate::support::*;

/// Runs the Python client `tests/fixtures/{script}` with `args`: its JSON summary.
async fn python_fixture(script: &str, args: Vec<String>) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .output()
            .expect("python3 (the test command installs Python's websockets)")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `tests/fixtures/deflate_client.py` against `url`: what the server agreed to, and how
/// many messages came back unchanged.
async fn python_client(url: &str, count: usize) -> Value {
    python_fixture(
        "deflate_client.py",
        vec![url.to_string(), count.to_string()],
    )
    .await
}

/// An echo endpoint `name` with these descriptor fields.
fn echo_endpoint(ws: &Workspace, name: &str, fields: &str) {
    ws.write(
        &format!("p/{name}.websocket"),
        &format!(r#"{{"handler": "p/echo", "endpoint": "{name}"{fields}}}"#),
    )
    .write("p/echo.js", "exports.onMessage = (m) => m;");
}

/// The compression counters of `endpoint`: bytes sent before and after, received after and
/// before.
async fn compressed_bytes(server: &Server, endpoint: &str) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (slot, name) in [
        "switchboard_compression_sent_bytes_total",
        "switchboard_compression_sent_wire_bytes_total",
        "switchboard_compression_received_bytes_total",
        "switchboard_compression_received_wire_bytes_total",
    ]
    .iter()
    .enumerate()
    {
        out[slot] = server
            .metric(&format!("{name}{{endpoint=\"{endpoint}\"}}"))
            .await;
    }
    out
}

#[tokio::test]
async fn python_websockets_negotiates_shared_and_dedicated_and_messages_are_compressed() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "plain", "");
    echo_endpoint(&ws, "shared", r#", "compression": "shared""#);
    echo_endpoint(
        &ws,
        "dedicated",
        r#", "compression": "dedicated", "compressionWindowBits": 12"#,
    );
    // The server's default (off) leaves "plain" uncompressed.
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    let plain = python_client(&server.ws_url("plain"), 5).await;
    assert_eq!(plain, json!({"extensions": null, "echoed": 10}));

    let shared = python_client(&server.ws_url("shared"), 50).await;
    assert_eq!(
        shared,
        json!({"extensions": "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "echoed": 100})
    );
    let dedicated = python_client(&server.ws_url("dedicated"), 50).await;
    assert_eq!(
        dedicated,
        json!({"extensions": "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", "echoed": 100})
    );

    let [sent, sent_wire, received, received_wire] = compressed_bytes(&server, "shared").await;
    let message_bytes = server
        .metric("switchboard_bytes_sent_total{endpoint=\"shared\"}")
        .await;
    assert_eq!(sent, message_bytes, "every message was compressed");
    assert_eq!(received, sent, "what came in went back out");
    assert!(
        sent_wire < sent / 3.0,
        "shared: {sent} bytes sent as {sent_wire}"
    );
    assert!(received_wire < received / 3.0);
    // With the window kept between messages, messages that differ in a counter cost a few bytes.
    let [dedicated_sent, dedicated_wire, ..] = compressed_bytes(&server, "dedicated").await;
    assert_eq!(dedicated_sent, sent);
    assert!(
        dedicated_wire < sent_wire / 4.0,
        "dedicated: {dedicated_wire} bytes on the wire, shared: {sent_wire}"
    );
    assert_eq!(
        server.metric("switchboard_compression_windows_bytes").await,
        0.0,
        "the windows of closed connections are given back"
    );
}

/// Runs `tests/fixtures/stomp_deflate_client.py`: a STOMP session at `/stomp`, `count` messages
/// of about 1 KiB to `endpoint`; its JSON summary.
async fn stomp_client(server: &Server, endpoint: &str, count: usize) -> Value {
    let url = format!("ws://{}/stomp", server.address);
    let args = vec![url, endpoint.to_string(), count.to_string()];
    python_fixture("stomp_deflate_client.py", args).await
}

#[tokio::test]
async fn stomp_sessions_are_compressed_in_the_servers_mode() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "e", "");
    // Off (the default): the offer is declined, and the session works uncompressed.
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    let off = stomp_client(&server, "e", 3).await;
    assert_eq!(off, json!({"extensions": null, "replies": 3}));
    drop(server);

    let mut wire = Vec::new();
    for (mode, answer) in [
        (
            "shared",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        ("dedicated", "permessage-deflate"),
    ] {
        let server = Server::start_with(ws.path(), &["--no-watch", "--compression", mode]);
        // The client compresses everything it sends, CONNECT and SUBSCRIBE too: the server reads
        // them before the session moves to its endpoint's thread.
        let summary = stomp_client(&server, "e", 30).await;
        assert_eq!(
            summary,
            json!({"extensions": answer, "replies": 30}),
            "{mode}"
        );
        let [sent, sent_wire, received, received_wire] = compressed_bytes(&server, "/stomp").await;
        // Thirty replies of Dirigible's envelope around about 1 KiB of JSON.
        assert!(sent > 30_000.0, "{mode}: {sent} bytes sent compressed");
        assert!(
            sent_wire < sent / 3.0,
            "{mode}: {sent} bytes sent as {sent_wire}"
        );
        assert!(
            received > 30_000.0,
            "{mode}: {received} bytes received compressed"
        );
        assert!(
            received_wire < received / 3.0,
            "{mode}: {received} bytes received as {received_wire}"
        );
        wire.push(sent_wire);
        drop(server);
    }
    // With the window kept between replies that differ in a counter, each costs a few bytes.
    assert!(
        wire[1] < wire[0] / 4.0,
        "dedicated: {} bytes on the wire, shared: {}",
        wire[1],
        wire[0]
    );
}

#[tokio::test]
async fn a_higher_compression_level_sends_fewer_bytes() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "shared", r#", "compression": "shared""#);
    let mut wire = Vec::new();
    for level in ["1", "9"] {
        let server = Server::start_with(ws.path(), &["--no-watch", "--compression-level", level]);
        let result = python_client(&server.ws_url("shared"), 20).await;
        assert_eq!(result["echoed"], 40);
        let [sent, sent_wire, ..] = compressed_bytes(&server, "shared").await;
        assert!(sent > 0.0);
        wire.push(sent_wire);
    }
    // Level 1 is zlib's quick strategy (fixed Huffman codes); 9 builds codes per message.
    assert!(
        wire[1] < wire[0] * 0.9,
        "level 9 sent {} bytes, level 1 sent {}",
        wire[1],
        wire[0]
    );
}

#[tokio::test]
async fn serve_compression_is_the_default_and_the_memory_bound_falls_back_to_shared() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "by-default", "");
    echo_endpoint(&ws, "off", r#", "compression": "off""#);
    let server = Server::start_with(
        ws.path(),
        &[
            "--no-watch",
            "--compression",
            "dedicated",
            "--compression-memory-mib",
            "0",
        ],
    );
    let fell_back = python_client(&server.ws_url("by-default"), 3).await;
    assert_eq!(
        fell_back["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    server.stderr.wait_for("the budget warning", |l| {
        l.contains("the memory for dedicated compression windows (0 bytes) is used up")
    });
    let off = python_client(&server.ws_url("off"), 3).await;
    assert_eq!(off["extensions"], Value::Null);
}

#[test]
fn a_bad_compression_setting_is_refused_with_the_field_and_the_reason() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "e", r#", "compression": "fast""#);
    let (code, report) = run_check(ws.path());
    assert_ne!(code, 0);
    assert!(
        report.contains(
            r#"p/e.websocket: field "compression": unknown compression "fast": use "off", "shared" or "dedicated""#
        ),
        "{report}"
    );
    let said = serve_refused(ws.path(), &["--compression-window-bits", "10"]);
    assert!(
        said.contains("a window size applies to \"dedicated\" compression only, not \"shared\""),
        "{said}"
    );
    let said = serve_refused(ws.path(), &["--compression-level", "12"]);
    assert!(
        said.contains("--compression-level") && said.contains("1..=9"),
        "{said}"
    );
}

/// What `serve --compression shared` with `options` says when it refuses them (exit code 2).
fn serve_refused(workspace: &std::path::Path, options: &[&str]) -> String {
    let output = std::process::Command::new(binary())
        .args(["serve", "--compression", "shared"])
        .args(options)
        .arg(workspace)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{options:?} were accepted");
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A client of our own that offers the extension, reads frames' RSV1 bit, and can send any
/// compressed payload.
async fn raw_deflate_client(url: &str) -> (Client, Option<String>) {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
            .parse()
            .unwrap(),
    );
    let config = WebSocketConfig::default()
        .compressed_messages(true)
        .max_message_size(None)
        .max_frame_size(None);
    let (client, response) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .unwrap();
    let agreed = response
        .headers()
        .get("Sec-WebSocket-Extensions")
        .map(|v| v.to_str().unwrap().to_string());
    (client, agreed)
}

/// `size` zero bytes as one raw DEFLATE message (RFC 7692: sync flush, tail removed), made a
/// mebibyte at a time.
fn deflated_zeros(size: usize) -> Vec<u8> {
    let mut stream = Compress::new(Compression::best(), false);
    let chunk = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(size / 1000 + 1024);
    let mut left = size;
    while left > 0 {
        let part = &chunk[..left.min(chunk.len())];
        let before = stream.total_in();
        let flush = if left == part.len() {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let mut offset = 0;
        loop {
            out.reserve(64 * 1024);
            stream
                .compress_vec(&part[offset..], &mut out, flush)
                .unwrap();
            offset = (stream.total_in() - before) as usize;
            if offset == part.len() && out.capacity() > out.len() {
                break;
            }
        }
        left -= part.len();
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn compressed(payload: Vec<u8>, data: Data) -> Message {
    let mut frame = Frame::message(payload, OpCode::Data(data), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_deflate_bomb_closes_with_1009_and_memory_stays_bounded() {
    let ws = Workspace::new();
    echo_endpoint(
        &ws,
        "bombed",
        r#", "compression": "shared", "maxMessageSize": 2097152"#,
    );
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    // Compressed replies carry RSV1, and inflate to what was sent.
    let (mut client, agreed) = raw_deflate_client(&server.ws_url("bombed")).await;
    assert_eq!(
        agreed.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let text = "{\"reading\": 21.5, \"unit\": \"celsius\"} ".repeat(40);
    client.send(Message::text(text.clone())).await.unwrap();
    let Message::Frame(reply) = next_message(&mut client).await else {
        panic!("the reply was not compressed");
    };
    assert!(reply.header().rsv1);
    assert!(reply.payload().len() < text.len() / 5);
    let mut inflated = Vec::with_capacity(text.len() + 64);
    flate2::Decompress::new(false)
        .decompress_vec(
            &[reply.payload(), &[0, 0, 0xff, 0xff]].concat(),
            &mut inflated,
            flate2::FlushDecompress::Sync,
        )
        .unwrap();
    assert_eq!(inflated, text.as_bytes());
    // A compressed message we made ourselves is inflated by the server.
    let mut deflater = Compress::new(Compression::default(), false);
    let mut hello = Vec::with_capacity(256);
    deflater
        .compress_vec(b"hello, compressed world", &mut hello, FlushCompress::Sync)
        .unwrap();
    hello.truncate(hello.len() - 4);
    client.send(compressed(hello, Data::Text)).await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Message::text("hello, compressed world")
    );

    // One GiB of zeros: about a mebibyte on the wire, within maxMessageSize.
    let bomb = deflated_zeros(1 << 30);
    eprintln!("bomb: {} bytes inflating to 1 GiB", bomb.len());
    assert!(bomb.len() < 2 << 20);
    let before = server.memory_kib("VmHWM");
    client.send(compressed(bomb, Data::Binary)).await.unwrap();
    expect_close(&mut client, 1009, "message too big").await;
    let after = server.memory_kib("VmHWM");
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!("peak resident memory grew {grown_mib:.1} MiB for the bomb");
    assert!(
        grown_mib < 48.0,
        "inflating stopped at the limit: the peak grew {grown_mib:.1} MiB"
    );
    // Corrupt data is refused with 1007; the server goes on serving.
    let (mut client, _) = raw_deflate_client(&server.ws_url("bombed")).await;
    client
        .send(compressed(vec![0xff, 0xfe, 0xfd, 0xfc], Data::Text))
        .await
        .unwrap();
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1007, "{}", frame.reason);
            assert!(
                frame.reason.contains("invalid compressed data"),
                "{}",
                frame.reason
            );
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let (mut client, _) = raw_deflate_client(&server.ws_url("bombed")).await;
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut client).await, Message::text("still here"));
}

#[tokio::test]
async fn headless_chromium_negotiates_the_extension_and_its_messages_are_compressed() {
    let ws = Workspace::new();
    echo_endpoint(&ws, "feed", r#", "compression": "shared""#);
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/", server.address)).await;
    let result = page
        .eval(&format!(
            r#"new Promise((resolve, reject) => {{
                 const socket = new WebSocket({url:?});
                 const text = JSON.stringify({{ items: Array.from({{ length: 40 }}, (_, i) => ({{ id: i, name: "item " + i }})) }});
                 socket.onerror = () => reject(new Error("socket error"));
                 socket.onopen = () => socket.send(text);
                 socket.onmessage = (event) => {{
                   resolve({{ extensions: socket.extensions, same: event.data === text, size: text.length }});
                   socket.close();
                 }};
               }})"#,
            url = server.ws_url("feed")
        ))
        .await;
    assert_eq!(result["same"], true, "{result}");
    assert!(
        result["extensions"]
            .as_str()
            .unwrap()
            .starts_with("permessage-deflate"),
        "{result}"
    );
    let size = result["size"].as_f64().unwrap();
    let [sent, sent_wire, received, received_wire] = compressed_bytes(&server, "feed").await;
    assert_eq!((sent, received), (size, size));
    assert!(sent_wire < size / 3.0, "{sent_wire} of {size}");
    assert!(
        received_wire < size / 3.0,
        "Chromium compressed its message: {received_wire} of {size}"
    );
}

#[tokio::test]
async fn outbound_clients_offer_compression_and_can_turn_it_off() {
    let ws = Workspace::new();
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ws_server.py");
    let mut python = std::process::Command::new("python3")
        .arg(python)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with websockets");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(python.stdout.take().unwrap()));
    let port: u16 = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("PORT ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The endpoint's handler is also the client's: it asks for a client, which sends a JSON
    // message to the Python server and says whether it came back unchanged.
    ws.write("c/c.websocket", r#"{"handler": "c/c", "endpoint": "c"}"#)
        .write(
            "c/c.js",
            &format!(
                r#"const websockets = require("net/websockets");
                   const text = JSON.stringify({{ items: Array.from({{ length: 40 }}, (_, i) => ({{ id: i, name: "item " + i }})) }});
                   let asker = null;
                   exports.onOpen = (socket) => {{ if (socket.uri) socket.send(text); }};
                   exports.onMessage = (m, socket) => {{
                     if (socket.uri) {{ asker.send(m === text ? "echoed" : "changed"); socket.close(); return; }}
                     asker = socket;
                     websockets.createWebsocket("ws://127.0.0.1:{port}/", "c/c", {{ compression: m === "on" }});
                   }};
                   exports.onError = (e) => asker && asker.send(`error: ${{e}}`);"#
            ),
        );
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    let mut conn = server.connect("c").await;
    assert_eq!(ask(&mut conn, "off").await, "echoed");
    let [sent, ..] = compressed_bytes(&server, "(outbound clients)").await;
    assert_eq!(sent, 0.0, "compression: false offers nothing");
    assert_eq!(ask(&mut conn, "on").await, "echoed");
    let [sent, sent_wire, received, received_wire] =
        compressed_bytes(&server, "(outbound clients)").await;
    assert!(
        sent > 1000.0 && sent_wire < sent / 3.0,
        "{sent} as {sent_wire}"
    );
    assert_eq!(received, sent);
    assert!(
        received_wire < received / 3.0,
        "{received} as {received_wire}"
    );
    let _ = python.stdin.take().map(|mut stdin| stdin.write_all(b""));
    let _ = python.kill();
    let _ = python.wait();
}
