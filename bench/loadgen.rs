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
//! Output is one JSON object on stdout; progress and errors go to stderr. Traffic goes only to
//! the URL given (loopback in the suite), and every run stops by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

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
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Opens `count` connections, a few at a time (so that a server is not flooded with upgrades).
async fn connect_all(url: &str, count: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(count);
    let mut pending = futures_util::stream::iter(0..count)
        .map(|i| {
            let url = url.to_string();
            async move {
                for attempt in 0..5 {
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio_tungstenite::connect_async_with_config(&url, Some(config()), true),
                    )
                    .await
                    {
                        Ok(Ok((socket, _))) => return socket,
                        Ok(Err(error)) if attempt == 4 => fail(format!("connection {i}: {error}")),
                        Err(_) if attempt == 4 => fail(format!("connection {i}: timed out")),
                        _ => tokio::time::sleep(Duration::from_millis(50 << attempt)).await,
                    }
                }
                unreachable!()
            }
        })
        .buffer_unordered(64);
    while let Some(socket) = pending.next().await {
        sockets.push(socket);
    }
    sockets
}

/// Payloads of one connection: a fixed ASCII body whose first 10 bytes carry the message's
/// sequence number, so that every echo is checked cheaply (no formatting per message).
struct Payloads {
    template: Vec<u8>,
}

const SEQ_DIGITS: usize = 10;

impl Payloads {
    fn new(conn: usize, size: usize) -> Self {
        let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let template = (0..size.max(SEQ_DIGITS))
            .map(|i| fill[(i + conn) % fill.len()])
            .collect();
        Self { template }
    }

    fn make(&self, seq: u64) -> Message {
        let mut bytes = self.template.clone();
        write_digits(&mut bytes[..SEQ_DIGITS], seq);
        // SAFETY: the template and the digits are ASCII, so the bytes are valid UTF-8 (checking
        // 16 KiB per message again would cost the generator time it needs for sending).
        Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(bytes.into()) })
    }

    fn matches(&self, received: &[u8], seq: u64) -> bool {
        let mut digits = [0u8; SEQ_DIGITS];
        write_digits(&mut digits, seq);
        received.len() == self.template.len()
            && received[..SEQ_DIGITS] == digits
            && received[SEQ_DIGITS..] == self.template[SEQ_DIGITS..]
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
    let mut sockets = connect_all(args.url(), args.connections).await;
    if let Some(endpoint) = &args.stomp {
        for socket in &mut sockets {
            stomp_session(socket, endpoint).await;
        }
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(sockets.len() + 1));
    let mut tasks = Vec::new();
    for (conn, socket) in sockets.into_iter().enumerate() {
        let (size, window) = (args.size, args.window.max(1));
        let stomp = args.stomp.clone();
        let (measuring, stop, counted, start_line) = (
            measuring.clone(),
            stop.clone(),
            counted.clone(),
            start_line.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Sends only follow receives, so the socket is used whole: no split, no lock.
            let mut socket = socket;
            let payloads = Payloads::new(conn, size);
            let make = |seq: u64| match &stomp {
                None => payloads.make(seq),
                Some(endpoint) => {
                    let Message::Text(text) = payloads.make(seq) else { unreachable!() };
                    Message::text(format!(
                        "SEND\ndestination:/ws/stomp/{endpoint}\n\n{{\"from\":\"loadgen\",\"text\":\"{}\"}}\0",
                        text.as_str()
                    ))
                }
            };
            let mut in_flight = std::collections::VecDeque::with_capacity(window);
            let mut latencies: Vec<u32> = Vec::new();
            let mut seq = 0u64;
            start_line.wait().await;
            for _ in 0..window {
                in_flight.push_back((seq, Instant::now()));
                socket.feed(make(seq)).await.unwrap_or_else(|e| fail(format!("send: {e}")));
                seq += 1;
            }
            socket.flush().await.unwrap_or_else(|e| fail(format!("send: {e}")));
            while !stop.load(Ordering::Relaxed) {
                let message = match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    Ok(Some(Ok(other))) => fail(format!("connection {conn}: unexpected {other:?}")),
                    Ok(Some(Err(e))) => fail(format!("connection {conn}: {e}")),
                    Ok(None) => fail(format!("connection {conn}: closed by the server")),
                    Err(_) => fail(format!("connection {conn}: no echo for 10 s")),
                };
                let (expected, sent_at) = in_flight.pop_front().unwrap_or_else(|| fail("echo of nothing".into()));
                let echoed = match &stomp {
                    None => message.as_bytes(),
                    Some(_) => stomp_reply_text(message.as_bytes()),
                };
                if !payloads.matches(echoed, expected) {
                    fail(format!("connection {conn}: echo {expected} is wrong (dropped, reordered or corrupted)"));
                }
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(sent_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                in_flight.push_back((seq, Instant::now()));
                socket.send(make(seq)).await.unwrap_or_else(|e| fail(format!("send: {e}")));
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
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let messages = counted.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    latencies.sort_unstable();
    let rate = messages as f64 / elapsed;
    json!({
        "mode": "echo", "label": args.label, "stomp": args.stomp, "connections": args.connections, "window": args.window,
        "size": args.size, "seconds": elapsed, "messages": messages,
        "messages_per_second": rate,
        "mb_per_second": rate * args.size as f64 * 2.0 / 1e6,
        "latency_ms": { "p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99), "p999": percentile(&latencies, 0.999) },
    })
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
async fn connect_spread(urls: &[String], count: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(count);
    for (index, url) in urls.iter().enumerate() {
        let share = count / urls.len() + usize::from(index < count % urls.len());
        sockets.extend(connect_all(url, share).await);
    }
    sockets
}

async fn broadcast(args: &Args) -> serde_json::Value {
    let mut receivers = connect_spread(&args.urls, args.connections).await;
    let mut sender = connect_all(args.url(), 1).await.pop().unwrap();
    if args.socketio {
        for (index, socket) in receivers.iter_mut().enumerate() {
            socketio_join(socket, index).await;
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
    for (index, socket) in receivers.into_iter().enumerate() {
        let round = round.clone();
        let payloads = Payloads::new(0, args.size);
        tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let mut expected = 0u64;
            loop {
                let text = match stream.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(other) => fail(format!("receiver {index}: unexpected {other:?}")),
                };
                let text: &str = if socketio {
                    // Engine.IO's ping ("2") is answered; other packets are not the broadcast.
                    if text.as_str() == "2" {
                        let _ = sink.send(Message::text("3")).await;
                        continue;
                    }
                    match socketio_payload(&text) {
                        Some(payload) => payload,
                        None => continue,
                    }
                } else {
                    &text
                };
                if !payloads.matches(text.as_bytes(), expected) {
                    fail(format!(
                        "receiver {index}: broadcast {expected} is wrong or missing"
                    ));
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
    let payloads = Payloads::new(0, args.size);
    let mut fanouts = Vec::with_capacity(args.rounds);
    let total = Instant::now();
    for number in 0..args.rounds as u64 {
        // Every receiver has counted the previous round (it completed), so none counts this
        // one before the reset.
        round.reached.store(0, Ordering::Release);
        let started = Instant::now();
        let message = payloads.make(number);
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
    json!({
        "mode": "broadcast", "label": args.label, "connections": args.connections, "rounds": args.rounds,
        "nodes": args.urls.len(),
        "size": args.size, "seconds": seconds,
        "deliveries_per_second": delivered as f64 / seconds,
        "fanout_ms": { "mean": fanouts.iter().map(|&f| f as f64).sum::<f64>() / fanouts.len().max(1) as f64 / 1000.0,
                       "p50": percentile(&sorted, 0.5), "p99": percentile(&sorted, 0.99) },
    })
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
    let sockets = connect_all(args.url(), args.connections).await;
    // Let the server finish whatever each new connection started (the handler's onOpen).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib(pid);
    let per_connection = (after.saturating_sub(before)) as f64 * 1024.0 / args.connections as f64;
    drop(sockets);
    json!({
        "mode": "idle", "label": args.label, "connections": args.connections,
        "server_rss_kib_before": before, "server_rss_kib_after": after,
        "bytes_per_connection": per_connection,
    })
}

fn main() {
    let args = Args::parse();
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
