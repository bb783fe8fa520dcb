//! Limits, close codes, isolation of runaway handlers, keepalive, origin and onUpgrade checks,
//! TLS, graceful shutdown and metrics, over real sockets.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

// ---------------------------------------------------------------- raw frames

/// Completes a WebSocket handshake by hand, so that the test can then write any bytes.
async fn raw_upgrade(address: &str, endpoint: &str) -> TcpStream {
    raw_upgrade_with(address, endpoint, &[]).await
}

/// Like [`raw_upgrade`], with `early` bytes written in the same write as the request.
async fn raw_upgrade_with(address: &str, endpoint: &str, early: &[u8]) -> TcpStream {
    let stream = TcpStream::connect(address).await.unwrap();
    handshake(stream, address, endpoint, early).await
}

/// The upgrade of [`raw_upgrade_with`] on a stream already connected to `address`.
async fn handshake(
    mut stream: TcpStream,
    address: &str,
    endpoint: &str,
    early: &[u8],
) -> TcpStream {
    let request = format!(
        "GET /websockets/v4/service/{endpoint} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(early);
    stream.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(TIMEOUT, stream.read_exact(&mut byte))
            .await
            .expect("handshake timed out")
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// One frame: FIN set, the given opcode and RSV bits, masked unless `unmasked`.
fn frame(opcode: u8, payload: &[u8], rsv: u8, unmasked: bool) -> Vec<u8> {
    let mut bytes = vec![0x80 | (rsv << 4) | opcode];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        length @ 0..=125 => bytes.push(mask_bit | length as u8),
        length @ 126..=0xffff => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    if unmasked {
        bytes.extend_from_slice(payload);
    } else {
        let key = [0x12, 0x34, 0x56, 0x78];
        bytes.extend_from_slice(&key);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    }
    bytes
}

/// Reads exactly `length` bytes from the server (`what` names them if they do not come).
async fn read_bytes(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    length: usize,
    what: &str,
) -> Vec<u8> {
    let mut bytes = vec![0u8; length];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
    bytes
}

/// Reads server frames until the connection ends; returns the close code sent, if any.
async fn close_code_from_server(stream: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut bytes)).await;
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0f;
        let mut length = (bytes[at + 1] & 0x7f) as usize;
        let mut header = 2;
        if length == 126 {
            length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
            header = 4;
        } else if length == 127 {
            length = u64::from_be_bytes(bytes[at + 2..at + 10].try_into().unwrap()) as usize;
            header = 10;
        }
        let payload = &bytes[at + header..(at + header + length).min(bytes.len())];
        if opcode == 0x8 && payload.len() >= 2 {
            return Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
        at += header + length;
    }
    None
}

fn echo_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.endpoint("echo", "echo", "echo/h")
        .write("echo/h.js", "exports.onMessage = (m) => m;");
    ws
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_answered() {
    // The HTTP server may read these frames along with the request, before the connection is
    // handed to its handler's thread: they must be passed on, not lost.
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut early = frame(0x1, b"first", 0, false);
    early.extend(frame(0x1, b"second", 0, false));
    let mut stream = raw_upgrade_with(&server.address, "echo", &early).await;
    let expected = [
        [0x81, 5]
            .iter()
            .chain(b"first")
            .copied()
            .collect::<Vec<u8>>(),
        [0x81, 6]
            .iter()
            .chain(b"second")
            .copied()
            .collect::<Vec<u8>>(),
    ]
    .concat();
    let echoed = read_bytes(&mut stream, expected.len(), "the echo of the early frames").await;
    assert_eq!(echoed, expected);
}

#[tokio::test]
async fn a_pong_held_back_by_a_full_socket_goes_out_once_the_peer_reads() {
    // A client that sends pings and reads nothing fills the server's socket with pongs until a
    // write would block; the server keeps reading and keeps only the latest pong waiting (its
    // memory does not grow with the pings: every pong was buffered before). Once the client
    // reads again, the server must be woken by the socket taking writes and send that pong:
    // nothing else arrives to wake it.
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    // A small receive buffer, fixed (loopback's would grow to 32 MB and take every pong).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket
        .connect(server.address.parse().unwrap())
        .await
        .unwrap();
    let stream = handshake(stream, &server.address, "echo", &[]).await;
    let (mut reader, mut writer) = stream.into_split();
    const PINGS: usize = 120_000;
    let mut pings = Vec::with_capacity(PINGS * 131);
    for n in 0..PINGS {
        let mut payload = format!("ping {n:>10}").into_bytes();
        payload.resize(125, b'.');
        pings.extend_from_slice(&frame(0x9, &payload, 0, false));
    }
    let mut last = b"the last ping".to_vec();
    last.resize(125, b'!');
    pings.extend_from_slice(&frame(0x9, &last, 0, false));
    // About 16 MB of pings, 15 MB of pongs: more than the two sockets' buffers hold (the
    // server's send buffer grows to 4 MB at most).
    tokio::time::timeout(TIMEOUT, writer.write_all(&pings))
        .await
        .expect("the server stopped reading pings")
        .unwrap();
    let mut pongs = 0usize;
    loop {
        let header = read_bytes(&mut reader, 2, "a pong").await;
        assert_eq!(header[0], 0x8a, "a pong frame");
        let payload =
            read_bytes(&mut reader, (header[1] & 0x7f) as usize, "a pong's payload").await;
        pongs += 1;
        if payload == last {
            break;
        }
    }
    assert!(
        pongs < PINGS + 1,
        "every one of the {pongs} pongs was sent: the server buffered them all while the client did not read"
    );
    // The connection still serves messages.
    writer
        .write_all(&frame(0x1, b"still here", 0, false))
        .await
        .unwrap();
    let echo = read_bytes(&mut reader, 12, "the echo").await;
    assert_eq!(&echo[..2], &[0x81, 10]);
    assert_eq!(&echo[2..], b"still here");
}

#[tokio::test]
async fn frames_that_arrive_in_pieces_are_answered_whole() {
    // The server keeps a partial frame until the rest arrives, whether the cut falls inside the
    // header, inside the payload or between frames, for frames smaller and larger than one read
    // (64 KiB): each piece is its own write on a no-delay socket, so it arrives on its own.
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut stream = raw_upgrade(&server.address, "echo").await;
    stream.set_nodelay(true).unwrap();
    let texts: Vec<String> = [20_000, 3, 70_000, 125, 126]
        .iter()
        .enumerate()
        .map(|(n, &size)| {
            (0..size)
                .map(|i| (b'a' + ((i + n) % 26) as u8) as char)
                .collect()
        })
        .collect();
    let bytes: Vec<u8> = texts
        .iter()
        .flat_map(|text| frame(0x1, text.as_bytes(), 0, false))
        .collect();
    // Cuts: inside the first header, just after it, inside payloads, across frame boundaries.
    let cuts = [
        1,
        3,
        8,
        4_000,
        20_009,
        20_011,
        20_020,
        40_000,
        90_010,
        bytes.len(),
    ];
    let mut from = 0;
    for cut in cuts {
        stream.write_all(&bytes[from..cut]).await.unwrap();
        stream.flush().await.unwrap();
        from = cut;
    }
    let expected: Vec<u8> = texts
        .iter()
        .flat_map(|text| frame(0x1, text.as_bytes(), 0, true))
        .collect();
    let echoed = read_bytes(&mut stream, expected.len(), "the echo of the pieces").await;
    assert!(
        echoed == expected,
        "the echoes differ from the messages sent"
    );
}

#[tokio::test]
async fn a_peer_that_resets_its_connection_gets_on_error_then_on_close_1006() {
    let ws = Workspace::new();
    ws.endpoint("e", "e", "e/h").write(
        "e/h.js",
        r#"let watcher = null;
           const events = [];
           exports.onMessage = (m, conn) => { if (m === "watch") { watcher = conn; return "watching"; } };
           exports.onError = (e, conn) => { if (conn !== watcher) events.push("error"); };
           exports.onClose = (conn, event) => {
             if (conn === watcher) return;
             events.push(`close ${event.code} ${event.wasClean}`);
             watcher.send(JSON.stringify(events));
           };"#,
    );
    let server = Server::start(ws.path());
    let mut watcher = server.connect("e").await;
    assert_eq!(ask(&mut watcher, "watch").await, "watching");
    let reset = raw_upgrade(&server.address, "e").await;
    reset.set_zero_linger().unwrap();
    drop(reset);
    assert_eq!(
        next_text(&mut watcher).await,
        r#"["error","close 1006 false"]"#
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_protocol_violations_with_1002() {
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "invalid UTF-8 in a text frame",
            frame(0x1, &[0x68, 0xff, 0xfe], 0, false),
            1007,
        ),
        ("an unmasked client frame", frame(0x1, b"hi", 0, true), 1002),
        ("reserved bits set", frame(0x1, b"hi", 0b100, false), 1002),
        ("an unknown opcode", frame(0x3, b"hi", 0, false), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut stream = raw_upgrade(&server.address, "echo").await;
        stream.write_all(&bytes).await.unwrap();
        assert_eq!(
            close_code_from_server(&mut stream).await,
            Some(code),
            "{what}"
        );
    }
    // The log lines are read by another thread: wait for them rather than race it.
    server
        .stderr
        .wait_for("the 1007 log line", |l| l.contains("closing with 1007"));
    let line = server
        .stderr
        .wait_for("a 1002 log line", |l| l.contains("closing with 1002"));
    assert!(
        line.contains("127.0.0.1:"),
        "the peer is named in the log: {line}"
    );
    // Nothing else was affected.
    let mut client = server.connect("echo").await;
    assert_eq!(ask(&mut client, "fine").await, "fine");
}

#[tokio::test]
async fn a_message_over_the_endpoint_limit_closes_with_1009() {
    let ws = Workspace::new();
    ws.write(
        "p/small.websocket",
        r#"{"handler": "p/h", "endpoint": "small", "maxMessageSize": 1024}"#,
    )
    .endpoint("p", "big", "p/h")
    .write("p/h.js", "exports.onMessage = (m) => `got ${m.length}`;");
    let server = Server::start_with(ws.path(), &["--max-message-size", "4096"]);
    let mut small = server.connect("small").await;
    let mut other = server.connect("small").await;
    assert_eq!(ask(&mut small, &"x".repeat(1024)).await, "got 1024");
    send_text(&mut small, &"x".repeat(1025)).await;
    expect_close(&mut small, 1009, "message too big").await;
    assert_eq!(ask(&mut other, "still").await, "got 5");
    // The server-wide limit applies where the descriptor sets none.
    let mut big = server.connect("big").await;
    assert_eq!(ask(&mut big, &"y".repeat(4096)).await, "got 4096");
    send_text(&mut big, &"y".repeat(4097)).await;
    expect_close(&mut big, 1009, "message too big").await;
}

#[tokio::test]
async fn connections_over_the_limits_get_503() {
    let ws = echo_workspace();
    ws.write(
        "echo/one.websocket",
        r#"{"handler": "echo/h", "endpoint": "one", "maxConnections": 1}"#,
    );
    let server = Server::start_with(ws.path(), &["--max-connections", "3"]);
    let _first = server.connect("one").await;
    let (status, body) = connect_with(&server.ws_url("one"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("endpoint one has reached its limit of 1 open connections"),
        "{body}"
    );
    let _a = server.connect("echo").await;
    let mut b = server.connect("echo").await;
    let (status, body) = connect_with(&server.ws_url("echo"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("limit of 3 open connections"), "{body}");
    // A slot frees when a connection closes.
    b.close(None).await.unwrap();
    while b.next().await.is_some() {}
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        match connect_with(&server.ws_url("echo"), &[]).await {
            Ok(mut c) => {
                assert_eq!(ask(&mut c, "back").await, "back");
                break;
            }
            Err((503, _)) if std::time::Instant::now() < deadline => {
                // The server notices the close a moment after the client does.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_closed_with_1008() {
    let ws = Workspace::new();
    ws.endpoint("p", "flood", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m, conn) => {
             const chunk = "z".repeat(16384);
             try { for (let i = 0; i < 2000; i++) conn.send(chunk); }
             catch (e) { console.log(`send failed: ${e.message}`); }
           };"#,
    );
    let server = Server::start_with(ws.path(), &["--send-queue-bytes", "262144"]);
    let mut client = server.connect("flood").await;
    send_text(&mut client, "go").await;
    // The handler queued far more than the socket takes while this client is not reading.
    server
        .stderr
        .wait_for("the queue to fill", |l| l.contains("send queue full"));
    let mut received = 0;
    loop {
        match next_message(&mut client).await {
            Message::Text(_) => received += 1,
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert_eq!(frame.reason.as_str(), "send queue full");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        received < 2000,
        "all {received} messages arrived: nothing was bounded"
    );
    let log = server
        .stderr
        .wait_for("the handler's view", |l| l.contains("send failed"));
    assert!(log.contains("send queue is full"), "{log}");
}

#[tokio::test]
async fn a_stuck_handler_is_terminated_while_another_endpoint_answers() {
    let ws = Workspace::new();
    ws.endpoint("stuck", "stuck", "stuck/h")
        .write(
            "stuck/h.js",
            r#"let state = 0;
               exports.onMessage = (m) => { state++; if (m === "spin") { while (true) {} } return `alive ${state}`; };
               exports.onError = (e, conn) => conn.send(`onError: ${e}`);"#,
        )
        .endpoint("fast", "fast", "fast/h")
        .write("fast/h.js", "exports.onMessage = (m) => `fast ${m}`;");
    let server = Server::start_with(ws.path(), &["--event-timeout-ms", "1500"]);
    let mut stuck = server.connect("stuck").await;
    let mut fast = server.connect("fast").await;
    assert_eq!(ask(&mut stuck, "hello").await, "alive 1");
    send_text(&mut stuck, "spin").await;
    for i in 0..10 {
        assert_eq!(ask(&mut fast, &i.to_string()).await, format!("fast {i}"));
    }
    assert_eq!(
        next_text(&mut stuck).await,
        "onError: handler terminated: it ran longer than the 1500 ms allowed per event"
    );
    // Restored, with its module state kept.
    assert_eq!(ask(&mut stuck, "after").await, "alive 3");
    server.stderr.wait_for("the termination log line", |l| {
        l.contains("stuck/h.js: an event of connection 1 was terminated: it ran longer than the 1500 ms allowed per event; its module state is kept")
    });
    assert!(server
        .get("/metrics")
        .await
        .body
        .contains("switchboard_handler_terminations_total{handler=\"stuck/h.js\"} 1"));
}

/// Messages queued behind a runaway event (they arrive while it spins, so they run in the same
/// batch after it) each get their own time: only the runaway is terminated, and the watchdog,
/// which watches a batch from its first event to its last, stops nothing else.
#[tokio::test]
async fn only_the_runaway_event_of_a_batch_is_terminated() {
    let ws = Workspace::new();
    ws.endpoint("stuck", "stuck", "stuck/h").write(
        "stuck/h.js",
        r#"let state = 0;
           exports.onMessage = (m) => {
             state++;
             if (m === "spin") { while (true) {} }
             const until = Date.now() + 300;
             while (Date.now() < until) {}
             return `${m} ${state}`;
           };
           exports.onError = (e, conn) => conn.send(`onError: ${e}`);"#,
    );
    let server = Server::start_with(ws.path(), &["--event-timeout-ms", "1000"]);
    let mut client = server.connect("stuck").await;
    send_text(&mut client, "spin").await;
    // Five events of 300 ms each after the runaway: 1.5 s in all, more than the limit of one.
    for name in ["a", "b", "c", "d", "e"] {
        send_text(&mut client, name).await;
    }
    assert_eq!(
        next_text(&mut client).await,
        "onError: handler terminated: it ran longer than the 1000 ms allowed per event"
    );
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        assert_eq!(next_text(&mut client).await, format!("{name} {}", i + 2));
    }
    assert!(server
        .get("/metrics")
        .await
        .body
        .contains("switchboard_handler_terminations_total{handler=\"stuck/h.js\"} 1"));
}

#[tokio::test]
async fn a_heap_hungry_handler_is_terminated_and_memory_returns() {
    let ws = Workspace::new();
    ws.endpoint("hungry", "hungry", "hungry/h")
        .write(
            "hungry/h.js",
            r#"const kept = [];
               exports.onMessage = (m) => {
                 if (m === "eat") { while (true) kept.push(new Array(1000).fill(Math.random())); }
                 return `fine ${kept.length}`;
               };
               exports.onError = (e, conn) => conn.send(`onError: ${e}`);"#,
        )
        .endpoint("fast", "fast", "fast/h")
        .write("fast/h.js", "exports.onMessage = (m) => `fast ${m}`;");
    let server = Server::start_with(ws.path(), &["--isolate-heap-mib", "64"]);
    let mut hungry = server.connect("hungry").await;
    let mut fast = server.connect("fast").await;
    assert_eq!(ask(&mut hungry, "hi").await, "fine 0");
    let before = server.metric("process_resident_memory_bytes").await;
    send_text(&mut hungry, "eat").await;
    assert_eq!(
        next_text(&mut hungry).await,
        "onError: handler terminated: it used more than the 64 MiB of heap allowed per handler"
    );
    assert_eq!(ask(&mut fast, "meanwhile").await, "fast meanwhile");
    server.stderr.wait_for("the reload", |l| {
        l.contains("module reloaded after the heap limit")
    });
    // The module state that held the allocation was dropped with the old module.
    assert_eq!(ask(&mut hungry, "again").await, "fine 0");
    let after = server.metric("process_resident_memory_bytes").await;
    let grown = (after - before) / 1048576.0;
    assert!(grown < 24.0, "resident memory grew by {grown:.1} MiB");
}

#[tokio::test]
async fn pings_keep_live_peers_and_close_silent_ones_with_1001() {
    let ws = echo_workspace();
    ws.write(
        "echo/log.js",
        "exports.onClose = (c, e) => console.log(`closed ${e.code} ${e.reason} ${e.wasClean}`);",
    )
    .endpoint("echo", "watched", "echo/log");
    let server = Server::start_with(
        ws.path(),
        &["--ping-interval-ms", "100", "--pong-timeout-ms", "300"],
    );
    // A client that reads answers pings (tungstenite does it while reading).
    let mut live = server.connect("echo").await;
    let mut pings = 0;
    while pings < 5 {
        match tokio::time::timeout(TIMEOUT, live.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) => pings += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ask(&mut live, "still here").await, "still here");
    // A peer that never answers is closed.
    let mut silent = raw_upgrade(&server.address, "watched").await;
    assert_eq!(close_code_from_server(&mut silent).await, Some(1001));
    server.stderr.wait_for("onClose", |l| {
        l.contains("closed 1001 no answer to ping false")
    });
}

#[tokio::test]
async fn origins_outside_the_allow_lists_get_403() {
    let ws = echo_workspace();
    ws.write(
        "echo/strict.websocket",
        r#"{"handler": "echo/h", "endpoint": "strict", "allowedOrigins": ["https://app.example"]}"#,
    );
    let server = Server::start_with(ws.path(), &["--allowed-origin", "https://site.example"]);
    let strict = server.ws_url("strict");
    let (status, body) = connect_with(&strict, &[("Origin", "https://evil.example")])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        body.contains(
            "origin https://evil.example is not allowed to connect to endpoint \"strict\""
        ),
        "{body}"
    );
    assert!(connect_with(&strict, &[("Origin", "https://app.example")])
        .await
        .is_ok());
    // The endpoint's own list replaces the global one.
    assert_eq!(
        connect_with(&strict, &[("Origin", "https://site.example")])
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    let echo = server.ws_url("echo");
    assert!(connect_with(&echo, &[("Origin", "https://site.example")])
        .await
        .is_ok());
    assert_eq!(
        connect_with(&echo, &[("Origin", "https://evil.example")])
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    // Clients that are not browsers send no Origin.
    assert!(connect_with(&echo, &[]).await.is_ok());
}

#[tokio::test]
async fn on_upgrade_checks_tokens_in_the_query_and_in_cookies() {
    let ws = Workspace::new();
    ws.endpoint("auth", "auth", "auth/h").write(
        "auth/h.js",
        r#"
        const users = { "t-alice": "alice", "t-bob": "bob" };
        exports.onUpgrade = (request) => {
          const token = request.query.token ?? request.cookies.session;
          if (token === undefined) return false;
          const user = users[token];
          if (!user) throw Object.assign(new Error(`unknown token ${token}`), { status: 401 });
          return { user, via: request.query.token ? "query" : "cookie", path: request.path };
        };
        exports.onMessage = (m, conn) => `${conn.data.user} (${conn.data.via}, ${conn.data.path}): ${m}`;
        "#,
    );
    let server = Server::start(ws.path());
    let url = server.ws_url("auth");
    let mut alice = connect_with(&format!("{url}?token=t-alice"), &[])
        .await
        .unwrap();
    assert_eq!(
        ask(&mut alice, "hi").await,
        "alice (query, /websockets/v4/service/auth): hi"
    );
    let mut bob = connect_with(&url, &[("Cookie", "theme=dark; session=t-bob")])
        .await
        .unwrap();
    assert_eq!(
        ask(&mut bob, "yo").await,
        "bob (cookie, /websockets/v4/service/auth): yo"
    );
    let (status, body) = connect_with(&format!("{url}?token=forged"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!((status, body.trim()), (401, "unknown token forged"));
    let (status, body) = connect_with(&url, &[]).await.err().unwrap();
    assert_eq!((status, body.trim()), (403, "refused by onUpgrade"));
}

#[tokio::test]
async fn handlers_cannot_load_code_outside_the_workspace_or_remote_code() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => { try { require(m); return "loaded"; } catch (e) { return `${e.name}: ${e.message}`; } };"#,
    );
    ws.endpoint("q", "remote", "q/h").write(
        "q/h.mjs",
        "import x from \"https://example.com/x.js\";\nexport const onMessage = () => x;",
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("e").await;
    assert_eq!(
        ask(&mut client, "../../../etc/passwd").await,
        "TypeError: cannot import \"../../../etc/passwd\" from p/h.js: it leaves the workspace"
    );
    assert_eq!(
        ask(&mut client, "/etc/passwd").await,
        "TypeError: cannot import \"/etc/passwd\" from p/h.js: absolute paths are not allowed: write ./relative/path or project/path from the workspace root"
    );
    assert_eq!(
        ask(&mut client, "https://example.com/x.js").await,
        "TypeError: cannot import \"https://example.com/x.js\" from p/h.js: remote modules are not allowed; copy the code into the workspace"
    );
    let refused = server.get("/websockets/v4/service/remote").await;
    assert_eq!(refused.status, 500);
    assert!(
        refused.body.contains("remote modules are not allowed"),
        "{}",
        refused.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_every_queued_message_then_1001_and_runs_on_close() {
    let ws = Workspace::new();
    ws.endpoint("p", "burst", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m, conn) => {
             let sent = 0;
             try { for (; sent < 3000; sent++) conn.send(`m${sent}`); }
             catch (e) { console.log(`refused after ${sent}: ${e.message}`); }
             console.log(`accepted ${sent}`);
           };
           exports.onClose = (conn, e) => console.log(`onClose ${conn.id} ${e.code}`);"#,
    );
    // A queue that holds the whole burst: this test is about shutdown, not the queue's bound.
    let mut server = Server::start_with(ws.path(), &["--send-queue-messages", "5000"]);
    let mut first = server.connect("burst").await;
    let mut second = server.connect("burst").await;
    send_text(&mut first, "go").await;
    assert_eq!(next_text(&mut first).await, "m0");
    // Messages are still being sent, queued or in flight when the signal arrives.
    server.signal("TERM");
    let mut received = 1;
    let close = loop {
        match next_message(&mut first).await {
            Message::Text(text) => {
                assert_eq!(text.as_str(), format!("m{received}"));
                received += 1;
            }
            other => break other,
        }
    };
    match close {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1001);
            assert_eq!(frame.reason.as_str(), "server shutting down");
        }
        other => panic!("{other:?}"),
    }
    // Every message the server accepted before the close arrived, in order.
    let accepted = server
        .stderr
        .wait_for("the handler's count", |l| l.contains("accepted "));
    assert!(
        accepted.ends_with(&format!("accepted {received}")),
        "{accepted}, received {received}"
    );
    expect_close(&mut second, 1001, "server shutting down").await;
    // Reading on lets the clients answer the close handshake.
    for mut client in [first, second] {
        while let Some(Ok(_)) = client.next().await {}
    }
    let status = tokio::task::block_in_place(|| server.wait_exit());
    assert!(status.success(), "exit status {status}");
    for line in ["onClose 1 1001", "onClose 2 1001", "shut down in"] {
        server.stderr.wait_for(line, |l| l.contains(line));
    }
}

#[tokio::test]
async fn metrics_count_connections_traffic_and_latency() {
    let ws = echo_workspace();
    let server = Server::start(ws.path());
    let mut client = server.connect("echo").await;
    for i in 0..5 {
        assert_eq!(ask(&mut client, &format!("m{i}")).await, format!("m{i}"));
    }
    let metrics = server.get("/metrics").await.body;
    for expected in [
        "switchboard_connections_open{endpoint=\"echo\"} 1",
        "switchboard_messages_received_total{endpoint=\"echo\"} 5",
        "switchboard_bytes_received_total{endpoint=\"echo\"} 10",
        "switchboard_messages_sent_total{endpoint=\"echo\"} 5",
        "switchboard_isolates_alive 1",
        "# TYPE switchboard_event_duration_seconds histogram",
        // onStart when the endpoint was bound, onOpen, and five messages.
        "switchboard_event_duration_seconds_bucket{le=\"+Inf\"} 7",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
}

/// Handlers and descriptors mangled at random: each gets a clear error, nothing panics, and the
/// good endpoint beside them serves.
#[tokio::test]
async fn fuzzed_handlers_and_descriptors_are_reported_not_fatal() {
    let handler_seed = r#"const ws = require("net/websockets");
let count = 0;
exports.onOpen = (conn) => { conn.send(`hi ${conn.id}`); };
exports.onMessage = async (message, conn) => {
  count += 1;
  if (typeof message === "string") return { echo: message, count, method: ws.getMethod() };
  return new Uint8Array(message);
};
setTimeout(() => console.log("timer"), 5);
"#;
    let descriptor_seed = r#"{"handler": "fNN/h", "endpoint": "eNN", "maxMessageSize": 4096, "service": {"interval": "1s"}}"#;
    let ws = Workspace::new();
    ws.endpoint("good", "good", "good/h")
        .write("good/h.js", "exports.onMessage = (m) => `good ${m}`;");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"{}()[];:,.=>`'\"\\$ \nabcxyz0123456789+-*/!?&|<";
    let mut mangle = |seed: &str| -> String {
        let mut bytes = seed.as_bytes().to_vec();
        for _ in 0..(1 + random() % 4) {
            let at = (random() as usize) % bytes.len();
            match random() % 3 {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[(random() as usize) % alphabet.len()]),
                _ => bytes.truncate(at.max(1)),
            }
        }
        String::from_utf8_lossy(&bytes).to_string()
    };
    for n in 0..40 {
        ws.write(&format!("f{n}/h.js"), &mangle(handler_seed));
        ws.write(
            &format!("f{n}/e.websocket"),
            &mangle(&descriptor_seed.replace("NN", &n.to_string())),
        );
    }
    let (code, output) = run_check(ws.path());
    assert!(
        code == 0 || code == 1,
        "check exited with {code}:\n{output}"
    );
    for line in output.lines() {
        assert!(
            line.contains(": ") || line.contains("problem(s)"),
            "unclear line: {line:?}"
        );
        assert!(!line.contains("panicked"), "{line}");
    }
    let server = Server::start(ws.path());
    assert_eq!(server.get("/").await.status, 200);
    let mut client = server.connect("good").await;
    assert_eq!(ask(&mut client, "still").await, "good still");
    assert!(
        !server.stderr.text().contains("panicked"),
        "{}",
        server.stderr.text()
    );
}
