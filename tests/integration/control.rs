//! Server-side control: connections listed, sent to, disconnected and broadcast to from another
//! handler's isolate; topics; the periodic global service; onStart/onStop; named events both
//! ways; the browser library reconnecting after a restart.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

#[tokio::test]
async fn list_send_disconnect_and_broadcast_from_another_isolate() {
    let ws = Workspace::new();
    ws.endpoint("room", "room", "room/h")
        .write(
            "room/h.js",
            r#"exports.onUpgrade = (r) => ({ name: r.query.name });
               exports.onMessage = (m, conn) => `room got ${m}`;"#,
        )
        .endpoint("admin", "admin", "admin/h")
        .write(
            "admin/h.js",
            r#"
            const websockets = require("net/websockets");
            exports.onMessage = (m) => {
              const [command, ...rest] = m.split(" ");
              if (command === "list") {
                return websockets.getConnections("room").map((c) => ({
                  id: c.id, endpoint: c.endpoint, name: c.data.name,
                  remote: typeof c.remoteAddress, opened: c.openedAt instanceof Date,
                }));
              }
              if (command === "all") return websockets.getConnections().length;
              if (command === "send") { websockets.send(Number(rest[0]), `direct to ${rest[0]}`); return "sent"; }
              if (command === "push") { websockets.getConnection(Number(rest[0])).send({ pushed: true }); return "pushed"; }
              if (command === "kick") { websockets.disconnect(Number(rest[0]), 4001, "kicked by admin"); return "kicked"; }
              if (command === "bcast") return websockets.broadcast("room", "hello room", { except: [Number(rest[0])] });
              if (command === "missing") return JSON.stringify(websockets.getConnection(987654));
            };
            "#,
        );
    let server = Server::start(ws.path());
    let mut alice = connect(&format!("{}?name=alice", server.ws_url("room"))).await;
    let mut bob = connect(&format!("{}?name=bob", server.ws_url("room"))).await;
    let mut admin = server.connect("admin").await;
    let listed: Value = serde_json::from_str(&ask(&mut admin, "list").await).unwrap();
    assert_eq!(
        listed,
        json!([
            {"id": 1, "endpoint": "room", "name": "alice", "remote": "string", "opened": true},
            {"id": 2, "endpoint": "room", "name": "bob", "remote": "string", "opened": true},
        ])
    );
    assert_eq!(ask(&mut admin, "all").await, "3");
    assert_eq!(ask(&mut admin, "missing").await, "null");
    assert_eq!(ask(&mut admin, "send 1").await, "sent");
    assert_eq!(next_text(&mut alice).await, "direct to 1");
    assert_eq!(ask(&mut admin, "push 2").await, "pushed");
    assert_eq!(next_text(&mut bob).await, r#"{"pushed":true}"#);
    assert_eq!(ask(&mut admin, "bcast 2").await, "1");
    assert_eq!(next_text(&mut alice).await, "hello room");
    assert_eq!(ask(&mut admin, "kick 2").await, "kicked");
    expect_close(&mut bob, 4001, "kicked by admin").await;
    // Bob got no broadcast: the first message after "pushed" was the close.
    assert_eq!(ask(&mut alice, "still").await, "room got still");
}

/// A handler broadcasting to its own endpoint writes its receivers' sockets from its own thread,
/// in batches of 256 (one system call each where io_uring is available); a message larger than a
/// socket takes at once is finished by each connection's task, before the next message.
#[tokio::test]
async fn a_broadcast_from_a_handler_reaches_three_hundred_peers_whole_and_in_order() {
    let ws = Workspace::new();
    ws.endpoint("room", "room", "room/h").write(
        "room/h.js",
        r#"const websockets = require("net/websockets");
           exports.onMessage = (m) => {
             if (m === "count") return websockets.getConnections("room").length;
             websockets.broadcast("room", m);
           };"#,
    );
    let server = Server::start(ws.path());
    let mut peers = Vec::new();
    for _ in 0..300 {
        peers.push(server.connect("room").await);
    }
    assert_eq!(ask(peers.last_mut().unwrap(), "count").await, "300");
    let large: String = (0..600_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    send_text(&mut peers[0], "first").await;
    send_text(&mut peers[0], &large).await;
    send_text(&mut peers[0], "last").await;
    let readers = peers.into_iter().enumerate().map(|(index, mut peer)| {
        let large = large.clone();
        tokio::spawn(async move {
            assert_eq!(next_text(&mut peer).await, "first", "peer {index}");
            let got = next_text(&mut peer).await;
            assert!(
                got == large,
                "peer {index}: the large message arrived as {} bytes, or changed",
                got.len()
            );
            assert_eq!(next_text(&mut peer).await, "last", "peer {index}");
        })
    });
    for reader in readers {
        reader.await.unwrap();
    }
}

#[tokio::test]
async fn a_thousand_publishes_reach_a_hundred_subscribers_complete_and_in_order() {
    let ws = Workspace::new();
    ws.endpoint("news", "news", "news/sub")
        .write(
            "news/sub.js",
            r#"exports.onMessage = (m, conn) => {
                 if (m === "subscribe") { conn.subscribe("headlines"); return `topics ${conn.topics.join(",")}`; }
                 if (m === "unsubscribe") { conn.unsubscribe("headlines"); return `topics ${conn.topics.length}`; }
               };"#,
        )
        .endpoint("press", "press", "press/pub")
        .write(
            "press/pub.js",
            r#"const websockets = require("net/websockets");
               exports.onMessage = (m) => {
                 let reached = 0;
                 for (let i = 0; i < 1000; i++) reached = websockets.publish("headlines", `n${i}`);
                 return `published to ${reached}`;
               };"#,
        );
    let server = Server::start(ws.path());
    let mut subscribers = Vec::new();
    for _ in 0..100 {
        let mut client = server.connect("news").await;
        assert_eq!(ask(&mut client, "subscribe").await, "topics headlines");
        subscribers.push(client);
    }
    let mut leaver = server.connect("news").await;
    assert_eq!(ask(&mut leaver, "subscribe").await, "topics headlines");
    assert_eq!(ask(&mut leaver, "unsubscribe").await, "topics 0");
    let mut press = server.connect("press").await;
    assert_eq!(ask(&mut press, "go").await, "published to 100");
    let readers = subscribers.into_iter().map(|mut client| {
        tokio::spawn(async move {
            for i in 0..1000 {
                assert_eq!(next_text(&mut client).await, format!("n{i}"));
            }
        })
    });
    for reader in readers {
        reader.await.unwrap();
    }
    // The one who left got nothing.
    assert_eq!(ask(&mut leaver, "unsubscribe").await, "topics 0");
}

#[tokio::test]
async fn the_global_service_ticks_on_its_interval_without_overlapping() {
    let ws = Workspace::new();
    ws.write(
        "svc/svc.websocket",
        r#"{"handler": "svc/h", "endpoint": "svc", "service": {"interval": 100}}"#,
    )
    .write(
        "svc/h.js",
        r#"let n = 0; let running = false;
           exports.onTick = async (endpoint) => {
             if (running) console.log("OVERLAP");
             running = true;
             n += 1;
             console.log(`tick ${n} of ${endpoint} begins`);
             // The third tick takes longer than the interval, asynchronously.
             if (n === 3) await new Promise((resolve) => setTimeout(resolve, 350));
             console.log(`tick ${n} ends`);
             running = false;
           };"#,
    );
    let server = Server::start(ws.path());
    server
        .stderr
        .wait_for("six ticks", |l| l.contains("tick 6 ends"));
    let log = server.stderr.text();
    assert!(!log.contains("OVERLAP"), "{log}");
    assert!(log.contains("tick 1 of svc begins"), "{log}");
    assert!(
        log.contains("endpoint svc: onTick took")
            && log.contains("longer than its interval of 100 ms; the next tick is delayed"),
        "{log}"
    );
    // Each tick ends before the next begins.
    let order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tick "))
        .filter_map(|l| l.split("handler: svc/h.js: ").nth(1))
        .collect();
    for pair in order.chunks(2).take(6) {
        assert!(
            pair[0].contains("begins") && pair[1].contains("ends"),
            "{order:?}"
        );
    }
}

#[tokio::test]
async fn on_start_and_on_stop_run_around_a_hot_reload_and_removal() {
    let ws = Workspace::new();
    ws.endpoint("p", "life", "p/h").write(
        "p/h.js",
        "exports.onStart = (e) => console.log(`start v1 ${e}`); exports.onStop = (e) => console.log(`stop v1 ${e}`);",
    );
    let server = Server::start(ws.path());
    server
        .stderr
        .wait_for("v1 start", |l| l.contains("start v1 life"));
    ws.write(
        "p/h.js",
        "exports.onStart = (e) => console.log(`start v2 ${e}`); exports.onStop = (e) => console.log(`stop v2 ${e}`);",
    );
    server
        .stderr
        .wait_for("v2 start", |l| l.contains("start v2 life"));
    std::fs::remove_file(ws.path().join("p/life.websocket")).unwrap();
    server
        .stderr
        .wait_for("v2 stop", |l| l.contains("stop v2 life"));
    let log = server.stderr.text();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what} in {log}"))
    };
    assert!(at("start v1 life") < at("stop v1 life"));
    assert!(at("stop v1 life") < at("start v2 life"));
    assert!(at("start v2 life") < at("stop v2 life"));
}

#[tokio::test]
async fn named_events_both_ways() {
    let ws = Workspace::new();
    ws.endpoint("dev", "dev", "dev/h").write(
        "dev/h.js",
        r#"
        exports.onOpen = (conn) => conn.emit("ServerTime", "12:00", { zone: "UTC" });
        exports.Device_Message = (params, conn) => ({ echoed: params.message, by: conn.id });
        exports.Device_Async = async (params) => `later ${params.n}`;
        exports.helper = () => "not an event";
        exports.onMessage = (m) => `plain ${m}`;
        exports.onError = (error, conn) => conn.send(`onError: ${error}`);
        "#,
    );
    let server = Server::start(ws.path());
    let mut device = server.connect("dev").await;
    let pushed: Value = serde_json::from_str(&next_text(&mut device).await).unwrap();
    assert_eq!(
        pushed,
        json!({"type": "event", "event": "ServerTime", "params": ["12:00", {"zone": "UTC"}]})
    );
    let event = |name: &str, params: Value| {
        json!({"type": "event", "event": name, "params": params}).to_string()
    };
    assert_eq!(
        ask(
            &mut device,
            &event("Device_Message", json!({"message": "hi"}))
        )
        .await,
        r#"{"echoed":"hi","by":1}"#
    );
    assert_eq!(
        ask(&mut device, &event("Device_Async", json!({"n": 3}))).await,
        "later 3"
    );
    for refused in ["Device_Unknown", "helper", "onClose"] {
        let reply = ask(&mut device, &event(refused, json!({}))).await;
        assert!(
            reply.starts_with(&format!("onError: Error: unknown event \"{refused}\"")),
            "{reply}"
        );
    }
    assert_eq!(ask(&mut device, "not an event").await, "plain not an event");
    assert_eq!(
        ask(&mut device, r#"{"type":"other"}"#).await,
        r#"plain {"type":"other"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_library_reconnects_after_the_server_restarts() {
    let ws = Workspace::new();
    ws.endpoint("live", "live", "live/h")
        .write(
            "live/h.js",
            r#"exports.onOpen = (conn) => conn.emit("Live_Hello", conn.id);
               exports.Live_Ping = (params) => `pong ${params.n}`;"#,
        )
        .write(
            "live/index.html",
            r#"<!doctype html><html><head><script src="/switchboard/client.js"></script></head><body>
               <p id="state">starting</p><p id="log"></p>
               <script>
                 const log = (text) => { document.getElementById("log").textContent += text + ";"; };
                 window.sb = Switchboard.connect("live", { minDelay: 100, maxDelay: 400 });
                 sb.on("open", () => { document.getElementById("state").textContent = "open"; });
                 sb.on("close", () => { document.getElementById("state").textContent = "closed"; });
                 sb.on("reconnecting", (r) => log(`retry ${r.attempt}`));
                 sb.on("Live_Hello", (id) => log(`hello ${id}`));
                 sb.on("message", (data) => log(data));
               </script></body></html>"#,
        );
    let mut server = Server::start(ws.path());
    let address = server.address.clone();
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{address}/services/web/live/"))
        .await;
    let first = page
        .eval(&format!(
            r#"(async () => {{ {WAIT_FOR}
              await waitFor("the first hello", () => document.getElementById("log").textContent.includes("hello 1"));
              sb.emit("Live_Ping", {{ n: 1 }});
              await waitFor("the first pong", () => document.getElementById("log").textContent.includes("pong 1"));
              return document.getElementById("log").textContent; }})()"#
        ))
        .await;
    assert!(first.as_str().unwrap().contains("pong 1"), "{first}");

    // The server goes away; the page notices and keeps retrying.
    server.signal("TERM");
    tokio::task::block_in_place(|| server.wait_exit());
    page.eval(&format!(
        r#"(async () => {{ {WAIT_FOR}
          await waitFor("a retry", () => document.getElementById("log").textContent.includes("retry 2")); }})()"#
    ))
    .await;
    // A new server on the same address; the page reconnects and works again.
    let _restarted = Server::start_with(ws.path(), &["--listen", &address]);
    let second = page
        .eval(&format!(
            r#"(async () => {{ {WAIT_FOR}
              await waitFor("the hello after the restart", () => document.getElementById("log").textContent.includes("hello 1;", document.getElementById("log").textContent.indexOf("retry")));
              sb.emit("Live_Ping", {{ n: 2 }});
              await waitFor("the pong after the restart", () => document.getElementById("log").textContent.includes("pong 2"));
              return document.getElementById("state").textContent + " " + document.getElementById("log").textContent; }})()"#
        ))
        .await;
    let second = second.as_str().unwrap();
    assert!(second.starts_with("open "), "{second}");
    assert!(second.contains("pong 2"), "{second}");
}

#[tokio::test]
async fn the_chat_sample_pushes_server_time_to_every_member() {
    let ws = Workspace::new();
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects/chat");
    for file in ["chat-handler.mjs", "index.html"] {
        ws.write(
            &format!("chat/{file}"),
            &std::fs::read_to_string(projects.join(file)).unwrap(),
        );
    }
    // The sample's descriptor, with a short interval for the test.
    let descriptor = std::fs::read_to_string(projects.join("chat.websocket"))
        .unwrap()
        .replace("\"10s\"", "\"100ms\"");
    ws.write("chat/chat.websocket", &descriptor);
    let server = Server::start(ws.path());
    let mut member = server.connect("chat").await;
    loop {
        let message: Value = serde_json::from_str(&next_text(&mut member).await).unwrap();
        if message["type"] == "event" {
            assert_eq!(message["event"], "Chat_Time");
            break;
        }
    }
    member
        .send(Message::text(
            json!({"type": "event", "event": "Chat_Send", "params": {"text": "via event"}})
                .to_string(),
        ))
        .await
        .unwrap();
    loop {
        let message: Value = serde_json::from_str(&next_text(&mut member).await).unwrap();
        if message["type"] == "message" {
            assert_eq!(message["text"], "via event");
            break;
        }
    }
    let _ = member.next().await;
}
