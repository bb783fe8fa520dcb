//! Several nodes, one application (`serve --broker`): real `redis-server` processes on free
//! loopback ports (persistence off) and two or three real Switchboard processes. Each test starts
//! its own Redis, so tests run in parallel without sharing channels.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The handler every node runs: commands over text messages, answers as text.
const ROOM_HANDLER: &str = r#"
const ws = require("net/websockets");
exports.onMessage = async (message, conn) => {
  const [command, first, ...rest] = message.split(" ");
  const text = rest.join(" ");
  switch (command) {
    case "id": return String(conn.id);
    case "sub": conn.subscribe(first); return "subscribed " + first;
    case "pub": return "published " + ws.publish(first, text);
    case "all": return "broadcast " + ws.broadcast("room", first + (text ? " " + text : ""), { except: [conn] });
    case "send":
      try { ws.send(Number(first), text); return "sent"; } catch (e) { return "send failed: " + e.message; }
    case "kick":
      try { ws.disconnect(Number(first), 4001, text); return "kicked"; } catch (e) { return "kick failed: " + e.message; }
    case "presence": return JSON.stringify(await ws.getAllConnections("room", { waitMs: Number(first) || 1000 }));
    case "nodes": return JSON.stringify(ws.getNodes());
  }
  return "unknown command " + command;
};
"#;

/// A `redis-server` on a free loopback port with persistence off, killed when dropped.
pub struct Redis {
    /// The server process, while it runs.
    child: Option<Child>,
    /// Its port (kept across a restart).
    pub port: u16,
    /// Its options beyond port and persistence (TLS, a password).
    options: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(|port| vec!["--port".into(), port.to_string()])
    }

    /// A Redis whose options (`--port` or `--tls-port` among them) `options` gives for its port.
    pub fn start_with(options: impl Fn(u16) -> Vec<String>) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            options: options(port),
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let mut child = Command::new("redis-server")
            .args(&self.options)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/setup.sh --test installs it)");
        let stdout = Output::default().capture(child.stdout.take().unwrap());
        stdout.wait_for("redis-server to be ready", |line| {
            line.contains("Ready to accept connections")
        });
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn room_workspace() -> Workspace {
    let workspace = Workspace::new();
    workspace.endpoint("app", "room", "app/room.js");
    workspace.write("app/room.js", ROOM_HANDLER);
    workspace
}

/// A node of the application on `redis`.
fn node(workspace: &Workspace, redis: &Redis, name: &str) -> Server {
    node_at(workspace.path(), &redis.url(), name, &[], &[])
}

/// `serve WORKSPACE --broker BROKER --node-name NAME` (with `extra` options and `env`), once it
/// has joined the others.
fn node_at(
    workspace: &std::path::Path,
    broker: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let options = [&["--broker", broker, "--node-name", name], extra].concat();
    let server = Server::start_with_env(workspace, &options, env);
    server
        .stderr
        .wait_for("the node to join the broker", |line| {
            line.contains("joined the others through the broker")
        });
    server
}

/// A Redis, the room workspace, and two nodes of it that know each other.
async fn two_nodes() -> (Redis, Workspace, Server, Server) {
    let redis = Redis::start();
    let workspace = room_workspace();
    let a = node(&workspace, &redis, "node-a");
    let b = node(&workspace, &redis, "node-b");
    until_nodes(&a, 2).await;
    until_nodes(&b, 2).await;
    (redis, workspace, a, b)
}

/// Waits until `server` knows `count` live nodes (itself included).
async fn until_nodes(server: &Server, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = server.metric("switchboard_broker_nodes").await as usize;
        if nodes == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} knows {nodes} nodes, expected {count}",
            server.address
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a command and parses the JSON answer.
async fn ask_json(client: &mut Client, command: &str) -> Value {
    let answer = ask(client, command).await;
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{command}: {e}: {answer}"))
}

/// Subscribes each client to `topic` through its node, and waits until the node has subscribed
/// to the topic's channel in Redis (a publish before that would not reach it: at most once).
async fn subscribe(client: &mut Client, topic: &str) {
    assert_eq!(
        ask(client, &format!("sub {topic}")).await,
        format!("subscribed {topic}")
    );
}

/// Waits until Redis counts `count` subscribers on `channel`.
async fn until_subscribers(redis: &Redis, channel: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "PUBSUB", "NUMSUB", channel])
            .output()
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&output.stdout);
        let subscribers: usize = text
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if subscribers == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} has {subscribers} subscribers, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn publish_broadcast_send_and_disconnect_reach_connections_on_another_node() {
    let (redis, _workspace, a, b) = two_nodes().await;

    let mut on_a = a.connect("room").await;
    let mut on_b = b.connect("room").await;
    let mut other_on_b = b.connect("room").await;
    let id_a: u64 = ask(&mut on_a, "id").await.parse().unwrap();
    let id_b: u64 = ask(&mut on_b, "id").await.parse().unwrap();
    let id_other: u64 = ask(&mut other_on_b, "id").await.parse().unwrap();
    let (node_a, node_b) = (id_a >> 37, id_b >> 37);
    assert_ne!(node_a, node_b, "ids carry their node");
    assert!(id_a < 1 << 53 && id_b < 1 << 53, "ids are safe JS integers");
    until_subscribers(&redis, "switchboard:endpoint:room", 2).await;

    // publish: only the node whose connection holds the topic subscribes to its channel.
    subscribe(&mut on_b, "news").await;
    until_subscribers(&redis, "switchboard:topic:news", 1).await;
    assert_eq!(ask(&mut on_a, "pub news extra extra").await, "published 0");
    assert_eq!(next_text(&mut on_b).await, "extra extra");
    // A publish on b reaches b's subscriber once (its own copy from Redis is dropped).
    assert_eq!(ask(&mut other_on_b, "pub news local").await, "published 1");
    assert_eq!(next_text(&mut on_b).await, "local");

    // broadcast with except: everyone of the endpoint on both nodes but the sender.
    assert_eq!(ask(&mut on_b, "all hello everyone").await, "broadcast 1");
    assert_eq!(next_text(&mut other_on_b).await, "hello everyone");
    assert_eq!(next_text(&mut on_a).await, "hello everyone");
    // An except naming a connection of another node is honoured there.
    assert_eq!(ask(&mut on_a, "all from-a").await, "broadcast 0");
    assert_eq!(next_text(&mut on_b).await, "from-a");
    assert_eq!(next_text(&mut other_on_b).await, "from-a");

    // send(id) and disconnect(id) to a connection of the other node.
    assert_eq!(
        ask(&mut on_a, &format!("send {id_b} for you only")).await,
        "sent"
    );
    assert_eq!(next_text(&mut on_b).await, "for you only");
    assert_eq!(
        ask(&mut on_a, &format!("kick {id_other} go away")).await,
        "kicked"
    );
    expect_close(&mut other_on_b, 4001, "go away").await;
    // A node number nobody has is an error the handler sees, not a silent loss.
    let nobody_node = (1..).find(|n| *n != node_a && *n != node_b).unwrap();
    let nobody = (nobody_node << 37) | 1;
    let failed = ask(&mut on_a, &format!("send {nobody} hi")).await;
    assert!(failed.starts_with("send failed: connection"), "{failed}");

    assert!(a.metric("switchboard_broker_messages_out_total").await >= 3.0);
    assert!(b.metric("switchboard_broker_messages_in_total").await >= 3.0);
    assert_eq!(a.metric("switchboard_broker_up").await, 1.0);
}

#[tokio::test]
async fn presence_lists_every_node_and_forgets_a_node_killed_with_sigkill() {
    let redis = Redis::start();
    let workspace = room_workspace();
    let a = node(&workspace, &redis, "node-a");
    let b = node(&workspace, &redis, "node-b");
    let c = node(&workspace, &redis, "node-c");
    for server in [&a, &b, &c] {
        until_nodes(server, 3).await;
    }
    let mut on_a = a.connect("room").await;
    let mut on_b = b.connect("room").await;
    let _on_c = c.connect("room").await;
    subscribe(&mut on_b, "sports").await;

    let nodes = ask_json(&mut on_a, "nodes").await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "node-a", "this node first: {nodes}");
    assert_eq!(names.len(), 3, "{nodes}");
    assert_eq!(nodes[0]["self"], true);

    let presence = ask_json(&mut on_a, "presence").await;
    let connections = presence["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 3, "{presence}");
    let of_b = connections
        .iter()
        .find(|c| c["topics"] == serde_json::json!(["sports"]))
        .unwrap_or_else(|| panic!("b's connection with its topic: {presence}"));
    assert_eq!(of_b["endpoint"], "room");
    assert!(of_b["remoteAddress"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(of_b["openedAt"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(presence["nodes"].as_array().unwrap().len(), 3, "{presence}");
    assert_eq!(presence["missing"], serde_json::json!([]));

    // A node that stops without a word: forgotten within three heartbeats (6 s), then no longer
    // asked; until then a query names it as missing rather than waiting for it.
    let killed_at = Instant::now();
    let mut c = c;
    c.signal("KILL");
    c.wait_exit();
    let presence = ask_json(&mut on_a, "presence 300").await;
    let answered = presence["nodes"].as_array().unwrap().len();
    let missing = presence["missing"].as_array().unwrap();
    assert!(
        (answered == 2 && missing.len() == 1 && missing[0]["name"] == "node-c")
            || (answered == 2 && missing.is_empty()),
        "{presence}"
    );
    until_nodes(&a, 2).await;
    let forgotten_after = killed_at.elapsed();
    assert!(
        forgotten_after < Duration::from_secs(9),
        "forgotten after {forgotten_after:?}"
    );
    a.stderr
        .wait_for("the log of the node's departure", |line| {
            line.contains("(node-c) is gone: no heartbeat for 6 s")
        });
    let presence = ask_json(&mut on_a, "presence").await;
    assert_eq!(
        presence["connections"].as_array().unwrap().len(),
        2,
        "{presence}"
    );
    assert_eq!(presence["missing"], serde_json::json!([]));

    // A node that stops gracefully says bye: forgotten at once.
    b.signal("TERM");
    a.stderr
        .wait_for("the bye of node-b", |line| line.contains("(node-b) left"));
    until_nodes(&a, 1).await;
}

#[tokio::test]
async fn without_redis_nodes_serve_locally_and_cross_node_traffic_resumes_when_it_returns() {
    let (mut redis, _workspace, a, b) = two_nodes().await;
    let mut on_a = a.connect("room").await;
    let mut also_on_a = a.connect("room").await;
    let mut on_b = b.connect("room").await;
    let id_b: u64 = ask(&mut on_b, "id").await.parse().unwrap();
    until_subscribers(&redis, "switchboard:endpoint:room", 2).await;

    redis.stop();
    a.stderr.wait_for("the outage in a's log", |line| {
        line.contains("the link to the other nodes is down")
    });
    b.stderr.wait_for("the outage in b's log", |line| {
        line.contains("the link to the other nodes is down")
    });
    assert_eq!(a.metric("switchboard_broker_up").await, 0.0);

    // Local traffic flows: broadcast, publish and send on the same node.
    assert_eq!(ask(&mut on_a, "all local only").await, "broadcast 1");
    assert_eq!(next_text(&mut also_on_a).await, "local only");
    subscribe(&mut also_on_a, "alerts").await;
    assert_eq!(ask(&mut on_a, "pub alerts fire").await, "published 1");
    assert_eq!(next_text(&mut also_on_a).await, "fire");
    // A send to the other node says why it cannot arrive.
    let failed = ask(&mut on_a, &format!("send {id_b} hello?")).await;
    assert!(failed.contains("the broker is down"), "{failed}");
    // Presence answers at once with this node and names the one it cannot reach.
    let presence = ask_json(&mut on_a, "presence").await;
    assert_eq!(
        presence["connections"].as_array().unwrap().len(),
        2,
        "{presence}"
    );
    assert_eq!(presence["missing"][0]["name"], "node-b", "{presence}");

    // The outage is logged once per node, however many reconnection attempts fail.
    let outages = a
        .stderr
        .count(|line| line.contains("the link to the other nodes is down"));
    assert_eq!(outages, 1);

    redis.restart();
    for server in [&a, &b] {
        server.stderr.wait_for("the reconnection", |line| {
            line.contains("broker reachable again")
        });
    }
    until_nodes(&a, 2).await;
    until_nodes(&b, 2).await;
    assert_eq!(a.metric("switchboard_broker_up").await, 1.0);
    assert!(a.metric("switchboard_broker_reconnects_total").await >= 1.0);
    // Re-subscribed: b's endpoint channel and a's topic channel are back.
    until_subscribers(&redis, "switchboard:endpoint:room", 2).await;
    until_subscribers(&redis, "switchboard:topic:alerts", 1).await;
    assert_eq!(ask(&mut on_b, "all back again").await, "broadcast 0");
    assert_eq!(next_text(&mut on_a).await, "back again");
    assert_eq!(next_text(&mut also_on_a).await, "back again");
    assert_eq!(ask(&mut on_b, "pub alerts resumed").await, "published 0");
    assert_eq!(next_text(&mut also_on_a).await, "resumed");
    assert_eq!(ask(&mut on_a, &format!("send {id_b} hello!")).await, "sent");
    assert_eq!(next_text(&mut on_b).await, "hello!");
}

#[tokio::test]
async fn a_broker_url_that_cannot_work_stops_the_start_with_the_reason() {
    let workspace = room_workspace();
    let output = Command::new(binary())
        .args(["serve", workspace.path().to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--broker",
            "http://user:secret@127.0.0.1:1",
        ])
        .output()
        .expect("run switchboard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("redis:// or rediss://"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is shown: {stderr}"
    );
}

#[tokio::test]
async fn stomp_subscribers_and_raw_connections_share_topics_across_nodes() {
    let (redis, workspace, a, b) = two_nodes().await;

    // A STOMP page on b subscribes to /topic/scores: b subscribes to the topic's channel.
    let mut page = crate::stomp::Stomp::connected(&b).await;
    page.send("SUBSCRIBE\nid:s\ndestination:/topic/scores\nreceipt:r\n\n\0")
        .await;
    assert_eq!(page.frame().await, "RECEIPT\nreceipt-id:r\n\n\0");
    until_subscribers(&redis, "switchboard:topic:scores", 1).await;
    // A handler on a publishes; the STOMP subscriber on b gets it.
    let mut on_a = a.connect("room").await;
    assert_eq!(ask(&mut on_a, "pub scores 2-1").await, "published 0");
    let message = page.frame().await;
    assert!(message.starts_with("MESSAGE\n"), "{message}");
    assert_eq!(crate::stomp::Stomp::body(&message), "2-1");

    // A STOMP SEND on b reaches a raw subscriber on a.
    subscribe(&mut on_a, "scores").await;
    until_subscribers(&redis, "switchboard:topic:scores", 2).await;
    page.send("SEND\ndestination:/topic/scores\n\n3-1\0").await;
    assert_eq!(next_text(&mut on_a).await, "3-1");
    assert_eq!(crate::stomp::Stomp::body(&page.frame().await), "3-1");

    // When the page unsubscribes, b leaves the channel (a still holds it).
    page.send("UNSUBSCRIBE\nid:s\nreceipt:u\n\n\0").await;
    assert_eq!(page.frame().await, "RECEIPT\nreceipt-id:u\n\n\0");
    until_subscribers(&redis, "switchboard:topic:scores", 1).await;
    // Another application on the same Redis (--broker-prefix) has channels of its own.
    let other = node_at(
        workspace.path(),
        &redis.url(),
        "other-app",
        &["--broker-prefix", "other"],
        &[],
    );
    until_subscribers(&redis, "other:nodes", 1).await;
    until_subscribers(&redis, "switchboard:nodes", 2).await;
    assert_eq!(other.metric("switchboard_broker_nodes").await, 1.0);
}

/// The chat sample, unchanged, on two nodes: a page on each, in headless Chromium, with the
/// browser library; what one page says, the other shows.
#[tokio::test]
async fn the_chat_sample_spans_two_nodes_in_headless_chromium() {
    use crate::browser::{Browser, Page, WAIT_FOR};
    let redis = Redis::start();
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    let a = node_at(&projects, &redis.url(), "chat-a", &["--no-watch"], &[]);
    let b = node_at(&projects, &redis.url(), "chat-b", &["--no-watch"], &[]);
    until_nodes(&a, 2).await;
    until_nodes(&b, 2).await;

    let browser = Browser::launch();
    let mut page_a = Page::open(&browser).await;
    let mut page_b = Page::open(&browser).await;
    let joined = format!(
        r#"(async () => {{
          {WAIT_FOR}
          await waitFor("the socket to open", () => document.getElementById("status").textContent === "connected");
          await waitFor("our join", () => document.getElementById("log").textContent.includes("joined"));
          return true;
        }})()"#
    );
    page_a
        .goto(&format!("http://{}/services/web/chat/", a.address))
        .await;
    page_a.eval(&joined).await;
    page_b
        .goto(&format!("http://{}/services/web/chat/", b.address))
        .await;
    page_b.eval(&joined).await;
    until_subscribers(&redis, "switchboard:endpoint:chat", 2).await;

    let say = |text: &str| {
        format!(
            r#"(async () => {{
              {WAIT_FOR}
              document.getElementById("text").value = "{text}";
              document.getElementById("send").click();
              await waitFor("our own message", () => document.getElementById("log").textContent.includes("me: {text}"));
              return true;
            }})()"#
        )
    };
    let shows = |text: &str| {
        format!(
            r#"(async () => {{
              {WAIT_FOR}
              await waitFor("the other node's message", () => /#\d+: {text}/.test(document.getElementById("log").textContent));
              return document.getElementById("log").textContent;
            }})()"#
        )
    };
    page_a.eval(&say("hello from node a")).await;
    let log_b = page_b.eval(&shows("hello from node a")).await;
    assert!(
        log_b.as_str().unwrap().contains(": hello from node a"),
        "{log_b}"
    );
    page_b.eval(&say("hello from node b")).await;
    let log_a = page_a.eval(&shows("hello from node b")).await;
    assert!(
        log_a.as_str().unwrap().contains(": hello from node b"),
        "{log_a}"
    );
}

/// `rediss://` with a password: a Redis that speaks only TLS (its certificate trusted through
/// `SSL_CERT_FILE`) and requires a password; two nodes join through it, and the password never
/// reaches the log.
#[tokio::test]
async fn nodes_join_through_redis_over_tls_with_a_password() {
    let certificate = crate::tls::certificate();
    let cert = certificate.cert.to_str().unwrap().to_string();
    let key = certificate.key.to_str().unwrap().to_string();
    let redis = Redis::start_with(|port| {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ]
        .map(String::from)
        .to_vec()
    });
    let url = format!("rediss://:s3cret@localhost:{}", redis.port);
    let workspace = room_workspace();
    let trusted = [("SSL_CERT_FILE", cert.as_str())];
    let a = node_at(workspace.path(), &url, "tls-a", &[], &trusted);
    let b = node_at(workspace.path(), &url, "tls-b", &[], &trusted);
    until_nodes(&a, 2).await;
    until_nodes(&b, 2).await;
    let mut on_a = a.connect("room").await;
    let mut on_b = b.connect("room").await;
    let id_b: u64 = ask(&mut on_b, "id").await.parse().unwrap();
    assert_eq!(
        ask(&mut on_a, &format!("send {id_b} over tls")).await,
        "sent"
    );
    assert_eq!(next_text(&mut on_b).await, "over tls");
    for server in [&a, &b] {
        assert!(server
            .stdout
            .text()
            .contains("on broker rediss://:***@localhost:"));
        assert!(
            !server.stdout.text().contains("s3cret") && !server.stderr.text().contains("s3cret")
        );
    }

    // A wrong password is refused with Redis's reason, and the node still serves.
    let wrong = Server::start_with_env(
        workspace.path(),
        &[
            "--broker",
            &format!("rediss://:wrong@localhost:{}", redis.port),
        ],
        &[("SSL_CERT_FILE", &cert)],
    );
    let refused = wrong.stderr.wait_for("the refusal", |line| {
        line.contains("chosen at random") || line.contains("cannot claim")
    });
    assert!(refused.to_lowercase().contains("pass"), "{refused}");
    assert!(!refused.contains("wrong@"), "{refused}");
    let mut alone = wrong.connect("room").await;
    assert!(ask(&mut alone, "id").await.parse::<u64>().is_ok());
}
