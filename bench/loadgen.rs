//! switchboard-loadgen: the benchmark suite's load generator.
//!
//! Modes:
//! - `echo`: N connections each keep a window of W messages of S bytes in flight for a fixed
//!   time; every echo is checked against what was sent (a server that drops, reorders or
//!   corrupts a message fails the run instead of scoring). Reports messages/s, MB/s and round-trip
//!   latency percentiles.
//! - `broadcast`: N receivers and one sender; each round the sender's message must reach every
//!   receiver; reports the fan-out time (until the last receiver has it) and messages delivered/s.
//! - `idle`: opens N connections and holds them; reports the server's resident memory per
//!   connection (from /proc, given the server's pid).
//!
//! `--stomp ENDPOINT` makes echo mode speak STOMP to a `/stomp` URL, as Dirigible's pages do: each
//! connection CONNECTs and subscribes to `/user/queue/reply/ENDPOINT`, each message is a SEND to
//! `/ws/stomp/ENDPOINT` with the body `{"from": "loadgen", "text": "<payload>"}`, and each echo
//! is the `text` of the MESSAGE that comes back.
//!
//! `--url` may be given several times (broadcast mode): receivers are spread over the URLs in turn
//! (nodes of one application) and the sender uses the first. `--socketio` speaks Socket.IO 4
//! (Engine.IO 4 over a WebSocket): each connection joins the default namespace, the sender emits
//! `broadcast` with the payload and receivers expect the `message` events the server emits, so
//! Socket.IO is measured with the same client as everyone else.
//!
//! `--binary` sends binary frames; `--upper` sends the alphabet in upper case and expects it back
//! in lower case (a handler that builds a new string). `--lean` is for measuring fast servers:
//! after the handshake (done by tokio-tungstenite) each connection speaks raw frames on its TCP
//! socket, one `write` per message from a frame encoded once (only the sequence digits change)
//! and one `read` per echo parsed in place, checking only each echo's opcode and length; pings
//! are answered. The generator's CPU per message is reported in every echo run, so that a reader
//! sees it stays well below the server's (the checked path costs it about 8 µs a message, the lean
//! one about a third of that).
//!
//! `--deflate` offers permessage-deflate as a browser does (`permessage-deflate;
//! client_max_window_bits`) and fails if the server declines it. Messages are sent compressed from
//! a pool of 1,000 precompressed messages (sequence numbers cycle through the pool, so the
//! generator spends no time compressing), echoes are inflated and checked (in broadcast mode, on
//! one receiver in 50; the others count arrivals), and the bytes on the wire (frame headers and
//! payloads, both directions) are reported beside the raw bytes. `--json` makes the messages JSON
//! documents (readings of sensors) instead of a repeated alphabet, which compress like real
//! traffic. The codec is Switchboard's own (`net::compression::codec`); Autobahn's cases 12-13,
//! Python's websockets and Chromium check it independently in the tests.
//!
//! Output is one JSON object on stdout; progress and errors go to stderr. Traffic goes only to
//! the URL given (loopback in the suite), and every run stops by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchboard::net::compression::codec::{Deflater, Inflater};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Echo,
    Broadcast,
    Idle,
}

/// Load generator for WebSocket servers.
#[derive(Parser, Debug)]
struct Args {
    /// The WebSocket URL to load (echo, or the broadcast endpoint); repeated in broadcast mode,
    /// receivers are spread over the URLs and the sender uses the first.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    #[arg(long, value_enum, default_value = "echo")]
    mode: Mode,
    /// Connections (receivers, in broadcast mode).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection (echo mode).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Seconds of measurement (echo), or rounds (broadcast).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before measuring (echo).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Broadcast rounds.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// The server's pid (idle mode: its memory is read from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label put into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Echo over STOMP to this endpoint (the URL is the server's `/stomp`).
    #[arg(long)]
    stomp: Option<String>,
    /// Broadcast over Socket.IO 4 (the URL is `ws://host:port/socket.io/?EIO=4&transport=websocket`).
    #[arg(long)]
    socketio: bool,
    /// Offer permessage-deflate (and require it): send compressed, inflate what comes back.
    #[arg(long)]
    deflate: bool,
    /// JSON messages (sensor readings) instead of a repeated alphabet.
    #[arg(long)]
    json: bool,
    /// Binary frames instead of text (the server is expected to echo them as binary).
    #[arg(long)]
    binary: bool,
    /// Send the alphabet in upper case and expect it back in lower case (a handler returning
    /// `m.toLowerCase()`, which must build a new string).
    #[arg(long)]
    upper: bool,
    /// Check only each echo's length, not its bytes: the least client CPU per message (run a
    /// checked pass for correctness; the suite does).
    #[arg(long)]
    lean: bool,
    /// Spread connections over this many loopback source addresses (127.0.0.1, .2, ...): one
    /// address has about 28,000 ephemeral ports, so 50,000 connections need two.
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// A connection that cannot be opened (after retries) is counted instead of failing the run:
    /// the output says how many opened (scale runs, where a server refusing some is the finding).
    #[arg(long)]
    partial: bool,
}

/// How connections are opened (`--sources`, `--partial`), set once in `main`.
struct Opening {
    sources: u8,
    partial: bool,
}

static OPENING: std::sync::OnceLock<Opening> = std::sync::OnceLock::new();

fn opening() -> &'static Opening {
    OPENING.get_or_init(|| Opening {
        sources: 1,
        partial: false,
    })
}

impl Args {
    /// The first (in echo and idle modes, the only) URL.
    fn url(&self) -> &str {
        &self.urls[0]
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn fail(message: String) -> ! {
    eprintln!("loadgen: FAILED: {message}");
    std::process::exit(1);
}

/// tungstenite's default 128 KiB read buffer is zeroed on every read: with it, the generator
/// spent a third of its time in memset and capped every server near 90k messages/s.
fn config(deflate: bool) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .compressed_messages(deflate)
}

/// What a browser offers.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A connection and what was agreed on it.
struct Connection {
    socket: Socket,
    /// permessage-deflate was agreed: whether the server keeps its window between messages
    /// (`server_no_context_takeover` absent), which the inflater must do too.
    server_takeover: Option<bool>,
}

/// Opens `count` connections, a few at a time (so that a server is not flooded with upgrades).
async fn connect_all(url: &str, count: usize) -> Vec<Socket> {
    connect_all_with(url, count, false)
        .await
        .into_iter()
        .map(|c| c.socket)
        .collect()
}

/// Opens connection number `index`, offering permessage-deflate when `deflate` (and requiring
/// it), from source address 127.0.0.(1 + index % --sources).
async fn connect_one(url: &str, deflate: bool, index: usize) -> Result<Connection, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if deflate {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Extensions", DEFLATE_OFFER.parse().unwrap());
    }
    let sources = opening().sources.max(1);
    let (socket, response) = if sources == 1 {
        tokio_tungstenite::connect_async_with_config(request, Some(config(deflate)), true)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let uri = request.uri();
        let target = format!(
            "{}:{}",
            uri.host().unwrap_or("127.0.0.1"),
            uri.port_u16().unwrap_or(80)
        );
        let target: std::net::SocketAddr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % sources as usize) as u8);
        socket
            .bind((source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket.connect(target).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        tokio_tungstenite::client_async_with_config(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
            Some(config(deflate)),
        )
        .await
        .map_err(|e| e.to_string())?
    };
    let server_takeover = if deflate {
        let answer = response
            .headers()
            .get("Sec-WebSocket-Extensions")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !answer.starts_with("permessage-deflate") {
            fail(format!(
                "the server declined permessage-deflate (answer {answer:?})"
            ));
        }
        Some(!answer.contains("server_no_context_takeover"))
    } else {
        None
    };
    Ok(Connection {
        socket,
        server_takeover,
    })
}

/// Opens `count` connections, offering permessage-deflate when `deflate`. With `--partial`, a
/// connection that cannot be opened is left out (the caller compares the count).
async fn connect_all_with(url: &str, count: usize, deflate: bool) -> Vec<Connection> {
    let mut sockets = Vec::with_capacity(count);
    let partial = opening().partial;
    let mut pending = futures_util::stream::iter(0..count)
        .map(|i| {
            let url = url.to_string();
            async move {
                for attempt in 0..5 {
                    let last = attempt == 4;
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        connect_one(&url, deflate, i),
                    )
                    .await
                    {
                        Ok(Ok(connection)) => return Some(connection),
                        Ok(Err(_)) | Err(_) if last && partial => return None,
                        Ok(Err(error)) if last => fail(format!("connection {i}: {error}")),
                        Err(_) if last => fail(format!("connection {i}: timed out")),
                        _ => tokio::time::sleep(Duration::from_millis(50 << attempt)).await,
                    }
                }
                unreachable!()
            }
        })
        .buffer_unordered(64);
    while let Some(socket) = pending.next().await {
        sockets.extend(socket);
    }
    sockets
}

/// Payloads of one connection: a fixed ASCII body with the message's sequence number in 10
/// digits at a fixed place, so that every echo is checked cheaply (no formatting per message);
/// or, with `--json`, a pool of JSON documents that differ as real readings do.
struct Payloads {
    /// What is sent (sequence digits aside).
    template: Vec<u8>,
    /// What must come back (the template in lower case with `--upper`).
    expected: Vec<u8>,
    /// Sent as binary frames.
    binary: bool,
    /// JSON mode: message `seq` is `documents[seq % POOL]`.
    documents: Vec<Bytes>,
}

const SEQ_DIGITS: usize = 10;

/// Distinct messages in `--json` and `--deflate` modes (sequence numbers cycle through them, and
/// with `--deflate` each is compressed once, before the run).
const POOL: u64 = 1000;

impl Payloads {
    fn new(conn: usize, size: usize, shape: Shape) -> Self {
        if shape.json {
            return Self {
                template: Vec::new(),
                expected: Vec::new(),
                binary: false,
                documents: (0..POOL)
                    .map(|seq| json_document(seq, size).into())
                    .collect(),
            };
        }
        let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let expected: Vec<u8> = (0..size.max(SEQ_DIGITS))
            .map(|i| fill[(i + conn) % fill.len()])
            .collect();
        let template = if shape.upper {
            expected.to_ascii_uppercase()
        } else {
            expected.clone()
        };
        Self {
            template,
            expected,
            binary: shape.binary,
            documents: Vec::new(),
        }
    }

    /// The size of every message.
    fn len(&self) -> usize {
        match self.documents.first() {
            Some(document) => document.len(),
            None => self.template.len(),
        }
    }

    fn bytes(&self, seq: u64) -> Bytes {
        if !self.documents.is_empty() {
            return self.documents[(seq % POOL) as usize].clone();
        }
        let mut bytes = self.template.clone();
        write_digits(&mut bytes[..SEQ_DIGITS], seq);
        bytes.into()
    }

    fn make(&self, seq: u64) -> Message {
        if self.binary {
            return Message::Binary(self.bytes(seq));
        }
        // SAFETY: the template and the digits, and the JSON documents, are ASCII, so the bytes
        // are valid UTF-8 (checking 16 KiB per message again would cost the generator time it
        // needs for sending).
        Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(self.bytes(seq)) })
    }

    fn matches(&self, received: &[u8], seq: u64) -> bool {
        if !self.documents.is_empty() {
            return received == self.documents[(seq % POOL) as usize];
        }
        let mut digits = [0u8; SEQ_DIGITS];
        write_digits(&mut digits, seq);
        received.len() == self.expected.len()
            && received[..SEQ_DIGITS] == digits
            && received[SEQ_DIGITS..] == self.expected[SEQ_DIGITS..]
    }

    /// The pool of precompressed messages (`--deflate`): message `seq` is `pool[seq % POOL]`.
    fn compressed_pool(&self) -> Vec<Bytes> {
        let mut deflater = Deflater::new(15, false);
        (0..POOL)
            .map(|seq| {
                let mut out = Vec::new();
                deflater.compress(&self.bytes(seq), &mut out);
                Bytes::from(out)
            })
            .collect()
    }
}

/// How messages look (`--json`, `--binary`, `--upper`).
#[derive(Clone, Copy)]
struct Shape {
    json: bool,
    binary: bool,
    upper: bool,
}

impl Shape {
    fn of(args: &Args) -> Self {
        Self {
            json: args.json,
            binary: args.binary,
            upper: args.upper,
        }
    }
}

/// CPU time this process has used, (user, system) seconds, from /proc: on loopback most of a
/// client's time is the kernel's TCP work for what it sends (the receiving side's processing
/// included), which any client pays; its own code is the user part.
fn own_cpu_split() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) / per_second, ticks(12) / per_second)
}

/// A JSON document of exactly `size` bytes (ASCII): a sequence number, a time and sensor
/// readings whose values differ from message to message, padded to size.
fn json_document(seq: u64, size: usize) -> Vec<u8> {
    const KINDS: [(&str, &str); 3] = [
        ("temperature", "celsius"),
        ("humidity", "percent"),
        ("pressure", "hPa"),
    ];
    let mut text = format!(
        "{{\"seq\":\"{seq:0SEQ_DIGITS$}\",\"time\":{},\"readings\":[",
        1_764_745_200_000 + seq * 250
    );
    let closing = "],\"pad\":\"\"}";
    // A small LCG: the same documents on every run, values that do not repeat.
    let mut state = seq.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for reading in 0.. {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let (kind, unit) = KINDS[reading % KINDS.len()];
        let value = (state >> 33) % 100_000;
        let item = format!(
            "{}{{\"sensor\":\"sensor-{:03}\",\"kind\":\"{kind}\",\"value\":{}.{:02},\"unit\":\"{unit}\",\"ok\":{}}}",
            if reading == 0 { "" } else { "," },
            (seq as usize * 7 + reading) % 200,
            value / 100,
            value % 100,
            !(state >> 20).is_multiple_of(16),
        );
        if text.len() + item.len() + closing.len() > size {
            break;
        }
        text.push_str(&item);
    }
    text.push_str("],\"pad\":\"");
    while text.len() + 2 < size {
        text.push(' ');
    }
    text.push_str("\"}");
    text.into_bytes()
}

/// A text message sent compressed (RSV1 set).
fn compressed_text(payload: Bytes) -> Message {
    let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

/// A frame's size on the wire: its header (with the mask key when the client sends) and payload.
fn wire_size(payload: usize, masked: bool) -> u64 {
    let length = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    (2 + length + if masked { 4 } else { 0 } + payload) as u64
}

/// The bytes of a received message (inflated into `buffer` when it came compressed and an
/// inflater is given) and its size on the wire; `None` for a compressed message not inflated.
fn received<'a>(
    message: &'a Message,
    inflater: Option<&mut Inflater>,
    buffer: &'a mut Vec<u8>,
) -> Result<(Option<&'a [u8]>, u64), String> {
    match message {
        Message::Text(text) => Ok((Some(text.as_bytes()), wire_size(text.len(), false))),
        Message::Binary(bytes) => Ok((Some(bytes), wire_size(bytes.len(), false))),
        Message::Frame(frame) if frame.header().rsv1 => {
            let wire = wire_size(frame.payload().len(), false);
            let Some(inflater) = inflater else {
                return Ok((None, wire));
            };
            buffer.clear();
            inflater
                .inflate(frame.payload(), 64 << 20, buffer)
                .map_err(|e| e.to_string())?;
            Ok((Some(buffer), wire))
        }
        other => Err(format!("unexpected {other:?}")),
    }
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Connects a socket as a STOMP session subscribed to `endpoint`'s replies.
async fn stomp_session(socket: &mut Socket, endpoint: &str) {
    let frames = [
        "CONNECT\naccept-version:1.2\nhost:loadgen\n\n\0".to_string(),
        format!("SUBSCRIBE\nid:0\ndestination:/user/queue/reply/{endpoint}\nreceipt:ready\n\n\0"),
    ];
    for (frame, expected) in frames.iter().zip(["CONNECTED", "RECEIPT"]) {
        socket
            .send(Message::text(frame.as_str()))
            .await
            .unwrap_or_else(|e| fail(format!("STOMP: {e}")));
        loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if text.starts_with(expected) => break,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => fail(format!("STOMP: expected {expected}, got {other:?}")),
            }
        }
    }
}

/// The `text` of a reply MESSAGE's envelope (payloads are plain ASCII: no escapes to undo).
fn stomp_reply_text(frame: &[u8]) -> &[u8] {
    let find = |needle: &[u8], from: usize| {
        frame[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|at| at + from)
    };
    let Some(start) = find(b"\"text\":\"", 0).map(|at| at + 8) else {
        return b"";
    };
    let end = find(b"\",\"time\"", start).unwrap_or(start);
    &frame[start..end]
}

async fn echo(args: &Args) -> serde_json::Value {
    let mut connections = connect_all_with(args.url(), args.connections, args.deflate).await;
    if let Some(endpoint) = &args.stomp {
        for connection in &mut connections {
            stomp_session(&mut connection.socket, endpoint).await;
        }
    }
    // JSON documents and compressed messages are made once, for every connection.
    let shape = Shape::of(args);
    let shared = (args.json || args.deflate).then(|| Arc::new(Payloads::new(0, args.size, shape)));
    let pool = shared
        .as_ref()
        .filter(|_| args.deflate)
        .map(|payloads| Arc::new(payloads.compressed_pool()));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let wire = Arc::new(WireCount::default());
    let start_line = Arc::new(Barrier::new(connections.len() + 1));
    let mut tasks = Vec::new();
    for (conn, connection) in connections.into_iter().enumerate() {
        let (size, window, lean) = (args.size, args.window.max(1), args.lean);
        let stomp = args.stomp.clone();
        let (shared, measuring, stop, counted, start_line, pool, wire) = (
            shared.clone(),
            measuring.clone(),
            stop.clone(),
            counted.clone(),
            start_line.clone(),
            pool.clone(),
            wire.clone(),
        );
        if lean && stomp.is_none() && pool.is_none() && shared.is_none() {
            let payloads = Payloads::new(conn, size, shape);
            tasks.push(tokio::spawn(async move {
                start_line.wait().await;
                raw_echo(
                    connection.socket,
                    conn,
                    &payloads,
                    window,
                    &stop,
                    &measuring,
                    &counted,
                )
                .await
            }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            // Sends only follow receives, so the socket is used whole: no split, no lock.
            let mut socket = connection.socket;
            let mut inflater = connection
                .server_takeover
                .map(|takeover| Inflater::new(15, takeover));
            let mut buffer = Vec::new();
            let payloads = shared.unwrap_or_else(|| Arc::new(Payloads::new(conn, size, shape)));
            let expected_len = payloads.len();
            let digits = |seq: u64| if pool.is_some() { seq % POOL } else { seq };
            let make = |seq: u64| -> (Message, u64) {
                if let Some(pool) = &pool {
                    let payload = pool[(seq % POOL) as usize].clone();
                    let on_wire = wire_size(payload.len(), true);
                    return (compressed_text(payload), on_wire);
                }
                let message = match &stomp {
                    None => payloads.make(seq),
                    Some(endpoint) => {
                        let Message::Text(text) = payloads.make(seq) else { unreachable!() };
                        Message::text(format!(
                            "SEND\ndestination:/ws/stomp/{endpoint}\n\n{{\"from\":\"loadgen\",\"text\":\"{}\"}}\0",
                            text.as_str()
                        ))
                    }
                };
                let on_wire = wire_size(message.len(), true);
                (message, on_wire)
            };
            let mut in_flight = std::collections::VecDeque::with_capacity(window);
            let mut latencies: Vec<u32> = Vec::new();
            let mut seq = 0u64;
            start_line.wait().await;
            for _ in 0..window {
                in_flight.push_back((seq, Instant::now()));
                socket.feed(make(seq).0).await.unwrap_or_else(|e| fail(format!("send: {e}")));
                seq += 1;
            }
            socket.flush().await.unwrap_or_else(|e| fail(format!("send: {e}")));
            while !stop.load(Ordering::Relaxed) {
                let message = match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(e))) => fail(format!("connection {conn}: {e}")),
                    Ok(None) => fail(format!("connection {conn}: closed by the server")),
                    Err(_) => fail(format!("connection {conn}: no echo for 10 s")),
                };
                let (bytes, received_wire) = received(&message, inflater.as_mut(), &mut buffer)
                    .unwrap_or_else(|e| fail(format!("connection {conn}: {e}")));
                let (expected, sent_at) = in_flight.pop_front().unwrap_or_else(|| fail("echo of nothing".into()));
                let bytes = bytes.unwrap_or_else(|| fail(format!("connection {conn}: compressed, but not agreed")));
                let echoed = match &stomp {
                    None => bytes,
                    Some(_) => stomp_reply_text(bytes),
                };
                let correct = if lean && stomp.is_none() {
                    echoed.len() == expected_len
                } else {
                    payloads.matches(echoed, digits(expected))
                };
                if !correct {
                    fail(format!("connection {conn}: echo {expected} is wrong (dropped, reordered or corrupted)"));
                }
                let (next, sent_wire) = make(seq);
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    counted.fetch_add(1, Ordering::Relaxed);
                    wire.add(sent_wire, received_wire);
                }
                in_flight.push_back((seq, Instant::now()));
                socket.send(next).await.unwrap_or_else(|e| fail(format!("send: {e}")));
                seq += 1;
            }
            let _ = socket.close(None).await;
            latencies
        }));
    }
    start_line.wait().await;
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = own_cpu_split();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let cpu_after = own_cpu_split();
    let (generator_user, generator_system) =
        (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let generator_cpu = generator_user + generator_system;
    let elapsed = started.elapsed().as_secs_f64();
    let messages = counted.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    // Echoes measured per connection: a server that starves some sockets shows it here.
    let mut per_connection = Vec::with_capacity(tasks.len());
    let opened = tasks.len();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(done) => {
                let done = done.unwrap_or_default();
                per_connection.push(done.len() as u64);
                latencies.extend(done);
            }
            Err(_) => fail("a connection had no echo for 10 s at the end".into()),
        }
    }
    latencies.sort_unstable();
    per_connection.sort_unstable();
    let share = |p: f64| {
        per_connection
            .get(((per_connection.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let rate = messages as f64 / elapsed;
    let mut result = json!({
        "mode": "echo", "label": args.label, "stomp": args.stomp, "connections": args.connections, "window": args.window,
        "size": args.size, "seconds": elapsed, "messages": messages,
        "messages_per_second": rate,
        "mb_per_second": rate * args.size as f64 * 2.0 / 1e6,
        "latency_ms": { "p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99), "p999": percentile(&latencies, 0.999),
                        "max": percentile(&latencies, 1.0) },
        "opened": opened,
        "echoes_per_connection": { "min": share(0.0), "median": share(0.5), "max": share(1.0) },
        "binary": args.binary, "upper": args.upper, "lean": args.lean,
        // The generator's own CPU while measuring (one thread: at most the measured seconds).
        "generator_cpu_seconds": generator_cpu,
        "generator_cpu_us_per_message": generator_cpu * 1e6 / messages.max(1) as f64,
        "generator_user_cpu_us_per_message": generator_user * 1e6 / messages.max(1) as f64,
        // How busy the generator's core was: near 1, the generator may be what limits the rate.
        "generator_core_busy": generator_cpu / elapsed,
    });
    if args.deflate || args.json {
        result["json"] = json!(args.json);
        result["deflate"] = json!(args.deflate);
        result["wire"] = wire.report(messages, args.size);
    }
    result
}

/// The mask key of every frame the lean generator sends (a client must mask; any key will do,
/// and a fixed one lets the frame be encoded once).
const RAW_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame of `payload`, masked with [`RAW_MASK`]; returns it and where the payload
/// starts.
fn raw_frame(payload: &[u8], binary: bool) -> (Vec<u8>, usize) {
    let mut frame = vec![if binary { 0x82 } else { 0x81 }];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&RAW_MASK);
    let start = frame.len();
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ RAW_MASK[i % 4]));
    (frame, start)
}

/// Writes all of `bytes` to the non-blocking socket, waiting for room only when it is full.
async fn write_all_raw(
    fd: &tokio::io::unix::AsyncFd<std::net::TcpStream>,
    mut bytes: &[u8],
) -> std::io::Result<()> {
    use std::io::Write;
    while !bytes.is_empty() {
        match fd.get_ref().write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                fd.writable().await?.clear_ready();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `--lean` echo on one connection: raw frames on the TCP socket (see the module's docs).
/// Returns the round-trip times measured.
///
/// The socket is driven by readiness (`AsyncFd`): once every message in flight has come back,
/// nothing more can arrive before the next send, so readiness is cleared without the `read`
/// that would only say `EAGAIN`: one `write` and one `read` per message, as a C client makes.
async fn raw_echo(
    socket: Socket,
    conn: usize,
    payloads: &Payloads,
    window: usize,
    stop: &AtomicBool,
    measuring: &AtomicBool,
    counted: &AtomicU64,
) -> Vec<u32> {
    use std::io::Read;
    let tokio_tungstenite::MaybeTlsStream::Plain(stream) = socket.into_inner() else {
        fail("--lean speaks ws:// only".into());
    };
    let broken = |what: String| -> ! { fail(format!("connection {conn}: {what}")) };
    let stream = stream.into_std().unwrap_or_else(|e| broken(e.to_string()));
    // SAFETY: the `TcpStream` owns its descriptor, which stays open and unchanged until the
    // `AsyncFd` (its only owner from here on) is dropped.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(stream) }
        .unwrap_or_else(|e| broken(e.to_string()));
    let (mut frame, start) = raw_frame(&payloads.template, payloads.binary);
    let expected_len = payloads.expected.len();
    let opcode = if payloads.binary { 0x2 } else { 0x1 };
    let mut digits = [0u8; SEQ_DIGITS];
    let mut encode = |frame: &mut Vec<u8>, seq: u64| {
        write_digits(&mut digits, seq);
        for (i, digit) in digits.iter().enumerate() {
            frame[start + i] = digit ^ RAW_MASK[i % 4];
        }
    };
    let mut buffer = vec![0u8; 64 * 1024 + expected_len];
    let (mut filled, mut seq) = (0usize, 0u64);
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut latencies: Vec<u32> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        // The window is filled first, then refilled as echoes come back.
        while in_flight.len() < window {
            encode(&mut frame, seq);
            in_flight.push_back(Instant::now());
            write_all_raw(&fd, &frame)
                .await
                .unwrap_or_else(|e| broken(format!("send: {e}")));
            seq += 1;
        }
        if filled == buffer.len() {
            broken("a frame larger than the read buffer".into());
        }
        let mut ready = fd
            .readable()
            .await
            .unwrap_or_else(|e| broken(format!("read: {e}")));
        let read = match ready.get_inner().read(&mut buffer[filled..]) {
            Ok(0) => broken("closed by the server".into()),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready.clear_ready();
                continue;
            }
            Err(e) => broken(format!("read: {e}")),
        };
        filled += read;
        let mut at = 0;
        let mut replies = Vec::new();
        // Every whole frame in the buffer.
        loop {
            let rest = &buffer[at..filled];
            if rest.len() < 2 {
                break;
            }
            if rest[1] & 0x80 != 0 {
                broken("the server masked a frame".into());
            }
            let (length, header) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => (
                    u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if rest.len() < header + length {
                break;
            }
            match rest[0] {
                0x89 => {
                    // A ping: the pong carries its payload, masked.
                    let (mut pong, _) = raw_frame(&rest[header..header + length], false);
                    pong[0] = 0x8a;
                    replies.push(pong);
                }
                0x8a => {}
                first if first == 0x80 | opcode => {
                    if length != expected_len {
                        broken(format!(
                            "an echo of {length} bytes, {expected_len} expected"
                        ));
                    }
                    let sent_at = in_flight
                        .pop_front()
                        .unwrap_or_else(|| broken("echo of nothing".into()));
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                first => broken(format!(
                    "unexpected frame (first byte {first:#04x}; fragmented or closed)"
                )),
            }
            at += header + length;
        }
        buffer.copy_within(at..filled, 0);
        filled -= at;
        if in_flight.is_empty() && filled == 0 {
            // Everything sent came back: nothing is on its way until the next send.
            ready.clear_ready();
        }
        drop(ready);
        for reply in replies {
            write_all_raw(&fd, &reply)
                .await
                .unwrap_or_else(|e| broken(format!("send: {e}")));
        }
    }
    latencies
}

/// Bytes on the wire while measuring (frame headers and payloads).
#[derive(Default)]
struct WireCount {
    /// Sent by the generator.
    sent: AtomicU64,
    /// Received from the server.
    received: AtomicU64,
}

impl WireCount {
    fn add(&self, sent: u64, received: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.received.fetch_add(received, Ordering::Relaxed);
    }

    /// Per message: wire bytes each way and the server's ratio (raw message size over the bytes
    /// it sent).
    fn report(&self, messages: u64, size: usize) -> serde_json::Value {
        let per = |total: &AtomicU64| total.load(Ordering::Relaxed) as f64 / messages.max(1) as f64;
        let received = per(&self.received);
        json!({
            "client_to_server_bytes_per_message": per(&self.sent),
            "server_to_client_bytes_per_message": received,
            "server_ratio": if received > 0.0 { size as f64 / received } else { 0.0 },
        })
    }
}

/// Joins Socket.IO's default namespace on a new Engine.IO WebSocket: the server's open packet
/// (`0{...}`), our CONNECT (`40`), its answer (`40{...}`).
async fn socketio_join(socket: &mut Socket, index: usize) {
    let mut joined = false;
    while !joined {
        let text = match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            _ => fail(format!("socket.io connection {index}: no handshake")),
        };
        if text.starts_with('0') {
            socket
                .send(Message::text("40"))
                .await
                .unwrap_or_else(|e| fail(format!("socket.io connection {index}: {e}")));
        } else if text.starts_with("40") {
            joined = true;
        } else if text.starts_with("44") {
            fail(format!("socket.io connection {index}: refused: {text}"));
        }
    }
}

/// The payload of a Socket.IO `message` event (`42["message","..."]`), or None for other packets.
fn socketio_payload(text: &str) -> Option<&str> {
    text.strip_prefix(r#"42["message",""#)?
        .strip_suffix(r#""]"#)
}

/// One broadcast round's arrivals, counted by the receivers.
struct RoundCount {
    /// Receivers that have the round's message.
    reached: AtomicU64,
    /// Told by the receiver that completes the round.
    complete: tokio::sync::Notify,
    /// How many receivers there are.
    target: u64,
}

/// Receivers spread over `urls` in turn (nodes of one application).
async fn connect_spread(urls: &[String], count: usize, deflate: bool) -> Vec<Connection> {
    let mut connections = Vec::with_capacity(count);
    for (index, url) in urls.iter().enumerate() {
        let share = count / urls.len() + usize::from(index < count % urls.len());
        connections.extend(connect_all_with(url, share, deflate).await);
    }
    connections
}

/// With `--deflate`, one receiver in this many inflates and checks every broadcast; the others
/// count compressed arrivals (inflating 1,000 copies would make the generator the bottleneck).
const CHECK_ONE_IN: usize = 50;

async fn broadcast(args: &Args) -> serde_json::Value {
    if args.socketio && args.deflate {
        fail("--socketio and --deflate together are not supported".into());
    }
    let mut receivers = connect_spread(&args.urls, args.connections, args.deflate).await;
    let mut sender = connect_all_with(args.url(), 1, args.deflate)
        .await
        .pop()
        .unwrap()
        .socket;
    if args.socketio {
        for (index, connection) in receivers.iter_mut().enumerate() {
            socketio_join(&mut connection.socket, index).await;
        }
        socketio_join(&mut sender, args.connections).await;
    }
    let socketio = args.socketio;
    // Receivers count the round's arrivals in one atomic and the last one wakes the sender: no
    // channel message and no timer per delivery, so the generator stays cheaper than the servers
    // it measures (a receiver that misses a round shows as the round's timeout).
    let round = Arc::new(RoundCount {
        reached: AtomicU64::new(0),
        complete: tokio::sync::Notify::new(),
        target: args.connections as u64,
    });
    let wire = Arc::new(WireCount::default());
    let (deflate, count_wire) = (args.deflate, args.deflate || args.json);
    // Every receiver checks against the same messages, made once.
    let payloads = Arc::new(Payloads::new(0, args.size, Shape::of(args)));
    for (index, connection) in receivers.into_iter().enumerate() {
        let (round, wire, payloads) = (round.clone(), wire.clone(), payloads.clone());
        let mut inflater = connection
            .server_takeover
            .filter(|_| index % CHECK_ONE_IN == 0)
            .map(|takeover| Inflater::new(15, takeover));
        tokio::spawn(async move {
            let (mut sink, mut stream) = connection.socket.split();
            let mut expected = 0u64;
            let mut buffer = Vec::new();
            loop {
                let message = match stream.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(message)) => message,
                    Some(Err(error)) => fail(format!("receiver {index}: {error}")),
                };
                let (bytes, on_wire) = received(&message, inflater.as_mut(), &mut buffer)
                    .unwrap_or_else(|e| fail(format!("receiver {index}: {e}")));
                if count_wire {
                    wire.add(0, on_wire);
                }
                let bytes: Option<&[u8]> = match bytes {
                    Some(text) if socketio => {
                        // Engine.IO's ping ("2") is answered; other packets are not the broadcast.
                        if text == b"2" {
                            let _ = sink.send(Message::text("3")).await;
                            continue;
                        }
                        match socketio_payload(std::str::from_utf8(text).unwrap_or("")) {
                            Some(payload) => Some(payload.as_bytes()),
                            None => continue,
                        }
                    }
                    bytes => bytes,
                };
                let digits = if deflate { expected % POOL } else { expected };
                if let Some(bytes) = bytes {
                    if !payloads.matches(bytes, digits) {
                        fail(format!(
                            "receiver {index}: broadcast {expected} is wrong or missing"
                        ));
                    }
                }
                if round.reached.fetch_add(1, Ordering::AcqRel) + 1 == round.target {
                    round.complete.notify_one();
                }
                expected += 1;
            }
        });
    }
    // The sender also hears its own broadcast on servers that include it; that is ignored.
    let (mut sink, mut own) = {
        let (sink, stream) = sender.split();
        (sink, stream)
    };
    tokio::spawn(async move { while own.next().await.is_some() {} });
    let pool = args.deflate.then(|| payloads.compressed_pool());
    let mut fanouts = Vec::with_capacity(args.rounds);
    let total = Instant::now();
    for number in 0..args.rounds as u64 {
        // Every receiver has counted the previous round (it completed), so none counts this
        // one before the reset.
        round.reached.store(0, Ordering::Release);
        let started = Instant::now();
        let message = match &pool {
            Some(pool) => compressed_text(pool[(number % POOL) as usize].clone()),
            None => payloads.make(number),
        };
        let message = match (socketio, message) {
            (true, Message::Text(text)) => {
                Message::text(format!(r#"42["broadcast","{}"]"#, text.as_str()))
            }
            (_, message) => message,
        };
        sink.send(message)
            .await
            .unwrap_or_else(|e| fail(format!("send: {e}")));
        if tokio::time::timeout(Duration::from_secs(10), round.complete.notified())
            .await
            .is_err()
        {
            fail(format!(
                "round {number}: only {} of {} receivers got it within 10 s",
                round.reached.load(Ordering::Acquire),
                args.connections
            ));
        }
        fanouts.push(started.elapsed().as_micros() as u32);
    }
    let seconds = total.elapsed().as_secs_f64();
    let _ = sender_close(sink).await;
    let mut sorted = fanouts.clone();
    sorted.sort_unstable();
    let delivered = args.rounds * args.connections;
    let mut result = json!({
        "mode": "broadcast", "label": args.label, "connections": args.connections, "rounds": args.rounds,
        "nodes": args.urls.len(),
        "size": args.size, "seconds": seconds,
        "deliveries_per_second": delivered as f64 / seconds,
        "fanout_ms": { "mean": fanouts.iter().map(|&f| f as f64).sum::<f64>() / fanouts.len().max(1) as f64 / 1000.0,
                       "p50": percentile(&sorted, 0.5), "p99": percentile(&sorted, 0.99) },
    });
    if args.deflate || args.json {
        result["json"] = json!(args.json);
        result["deflate"] = json!(args.deflate);
        result["wire"] = wire.report(delivered as u64, args.size);
    }
    result
}

async fn sender_close<S: futures_util::Sink<Message> + Unpin>(mut sink: S) -> Result<(), S::Error> {
    sink.close().await
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| fail(format!("cannot read the memory of pid {pid}")))
}

async fn idle(args: &Args) -> serde_json::Value {
    let pid = args
        .server_pid
        .unwrap_or_else(|| fail("--server-pid is needed in idle mode".into()));
    // A first connection and message warm the server's code paths up.
    let mut warm = connect_all(args.url(), 1).await;
    warm[0].send(Message::text("warm")).await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_kib(pid);
    let opening_started = Instant::now();
    let sockets = connect_all_with(args.url(), args.connections, args.deflate).await;
    let open_seconds = opening_started.elapsed().as_secs_f64();
    // Let the server finish whatever each new connection started (the handler's onOpen).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid);
    let per_connection =
        (after.saturating_sub(before)) as f64 * 1024.0 / sockets.len().max(1) as f64;
    let opened = sockets.len();
    drop(sockets);
    json!({
        "mode": "idle", "label": args.label, "connections": args.connections, "deflate": args.deflate,
        "opened": opened, "open_seconds": open_seconds,
        "server_rss_kib_before": before, "server_rss_kib_after": after,
        "bytes_per_connection": per_connection,
    })
}

fn main() {
    let args = Args::parse();
    let _ = OPENING.set(Opening {
        sources: args.sources,
        partial: args.partial,
    });
    // One thread: the generator is pinned to one core, where more threads only add switching.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e.to_string()));
    let result = runtime.block_on(async {
        match args.mode {
            Mode::Echo => echo(&args).await,
            Mode::Broadcast => broadcast(&args).await,
            Mode::Idle => idle(&args).await,
        }
    });
    println!("{result}");
    runtime.shutdown_timeout(Duration::from_secs(1));
}
