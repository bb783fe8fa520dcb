//! `"instances": N`: several isolates run one endpoint's handler module, each with its own module
//! state and thread; connections are spread across them; broadcast, topics and `getConnections`
//! see every instance's connections; the count follows the descriptor when it is edited.

use crate::support::*;

/// A handler that says which instance it runs in (a random name made at module load), and
/// reaches the other instances' connections through the API.
const HANDLER: &str = r#"
const websockets = require("net/websockets");
const me = Math.random().toString(36).slice(2, 10);
let counted = 0;
exports.onStart = (endpoint) => console.log(`onStart ${endpoint} in ${me}`);
exports.onOpen = (conn) => conn.subscribe("news");
exports.onMessage = (m, conn) => {
  if (m === "who") return me;
  if (m === "count") return String(++counted);
  if (m === "listed") return String(websockets.getConnections("hot").length);
  if (m === "broadcast") { websockets.broadcast("hot", `broadcast from ${me}`); return; }
  if (m === "publish") { websockets.publish("news", `news from ${me}`); return; }
  if (m === "greet") {
    for (const other of websockets.getConnections("hot")) other.send(`hello ${other.id} from ${me}`);
    return;
  }
  // Runs until another connection is marked: only another instance, running at the same
  // time on another thread, can mark it while this loop holds its isolate.
  if (m === "spin") {
    console.log(`spinning in ${me}`);
    while (!websockets.getConnections("hot").some((c) => c.topics.includes("marked"))) {}
    return "spun";
  }
  if (m === "mark") { conn.subscribe("marked"); return "marked"; }
};
"#;

#[tokio::test]
async fn instances_spread_connections_and_see_each_other() {
    let ws = Workspace::new();
    ws.write(
        "hot/hot.websocket",
        r#"{"handler": "hot/h", "endpoint": "hot", "instances": 2}"#,
    )
    .write("hot/h.js", HANDLER);
    let server = Server::start(ws.path());
    let listed = server.stdout.text();
    assert!(
        listed
            .lines()
            .any(|l| l.contains("endpoint hot") && l.contains("(2 instances)")),
        "{listed}"
    );
    // Two isolates, each with its own onStart.
    assert_eq!(server.metric("switchboard_isolates_alive").await, 2.0);
    server
        .stderr
        .wait_for_count("both onStarts", 2, |l| l.contains("onStart hot in"));

    // Each new connection goes to the instance with the fewest: alternately.
    let mut clients = Vec::new();
    let mut names = Vec::new();
    for _ in 0..4 {
        let mut client = server.connect("hot").await;
        names.push(ask(&mut client, "who").await);
        clients.push(client);
    }
    assert_ne!(names[0], names[1], "{names:?}");
    assert_eq!(names[0], names[2], "{names:?}");
    assert_eq!(names[1], names[3], "{names:?}");
    let metrics = server.get("/metrics").await.body;
    for instance in 0..2 {
        let line = format!(
            "switchboard_instance_connections{{handler=\"hot/h.js\",instance=\"{instance}\"}} 2"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // Module state is per instance.
    assert_eq!(ask(&mut clients[0], "count").await, "1");
    assert_eq!(ask(&mut clients[2], "count").await, "2");
    assert_eq!(ask(&mut clients[1], "count").await, "1");

    // Every instance sees every connection, and reaches it.
    assert_eq!(ask(&mut clients[1], "listed").await, "4");
    send_text(&mut clients[0], "broadcast").await;
    for client in clients.iter_mut() {
        assert_eq!(
            next_text(client).await,
            format!("broadcast from {}", names[0])
        );
    }
    send_text(&mut clients[1], "publish").await;
    for client in clients.iter_mut() {
        assert_eq!(next_text(client).await, format!("news from {}", names[1]));
    }
    send_text(&mut clients[3], "greet").await;
    let mut greeted = Vec::new();
    for client in clients.iter_mut() {
        greeted.push(next_text(client).await);
    }
    assert!(
        greeted
            .iter()
            .all(|g| g.starts_with("hello ") && g.ends_with(&format!(" from {}", names[1]))),
        "{greeted:?}"
    );

    // The instances run at the same time: one spins until the other marks a connection (with
    // one isolate the spin would hold it, and the watchdog would stop it after 5 s).
    send_text(&mut clients[0], "spin").await;
    server.stderr.wait_for("the spin", |l| {
        l.contains(&format!("spinning in {}", names[0]))
    });
    assert_eq!(ask(&mut clients[1], "mark").await, "marked");
    assert_eq!(next_text(&mut clients[0]).await, "spun");
    assert_eq!(server.stderr.count(|l| l.contains("terminated")), 0);

    // Fewer instances: the last one stops, closing its connections; the rest keep serving.
    ws.write(
        "hot/hot.websocket",
        r#"{"handler": "hot/h", "endpoint": "hot", "instances": 1}"#,
    );
    server.stderr.wait_for("the resize", |l| {
        l.contains("handler hot/h.js runs 1 instance(s) (was 2")
    });
    expect_close(&mut clients[1], 1001, "handler unloaded").await;
    expect_close(&mut clients[3], 1001, "handler unloaded").await;
    assert_eq!(ask(&mut clients[0], "who").await, names[0]);

    // "auto": one per core, started with the module's current code.
    ws.write(
        "hot/hot.websocket",
        r#"{"handler": "hot/h", "endpoint": "hot", "instances": "auto"}"#,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        server.stderr.wait_for("the resize", |l| {
            l.contains(&format!(
                "handler hot/h.js runs {cores} instance(s) (was 1)"
            ))
        });
        let mut newcomer = server.connect("hot").await;
        assert_ne!(ask(&mut newcomer, "who").await, names[0]);
    }
}

#[tokio::test]
async fn an_invalid_instances_field_names_the_descriptor_and_the_field() {
    let ws = Workspace::new();
    ws.write(
        "hot/hot.websocket",
        r#"{"handler": "hot/h", "endpoint": "hot", "instances": 0}"#,
    )
    .write("hot/h.js", HANDLER);
    let (code, output) = run_check(ws.path());
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains(
            "hot/hot.websocket: field \"instances\": must be a whole number from 1 to 64, or \"auto\" (one per core), got 0"
        ),
        "{output}"
    );
}

#[tokio::test]
async fn a_websocket_decorator_asks_for_instances_too() {
    let ws = Workspace::new();
    ws.write(
        "ts/HotWebsocket.ts",
        r#"import { Websocket } from "sdk/net";
           const me: string = Math.random().toString(36).slice(2, 10);
           @Websocket({ name: "hot", endpoint: "hot-ts", instances: 2 })
           export class HotWebsocket {}
           export function onMessage(message: string): string { return me; }"#,
    );
    let server = Server::start(ws.path());
    let listed = server.stdout.text();
    assert!(
        listed
            .lines()
            .any(|l| l.contains("endpoint hot-ts") && l.contains("(2 instances)")),
        "{listed}"
    );
    let mut first = server.connect("hot-ts").await;
    let mut second = server.connect("hot-ts").await;
    assert_ne!(ask(&mut first, "who").await, ask(&mut second, "who").await);
}

#[tokio::test]
async fn a_client_runs_its_events_in_the_instance_that_created_it() {
    // A bridge: each inbound connection's first message names B's URL, and A relays both ways
    // through a client it handles itself. Which inbound connection a client belongs to is
    // module state of the instance that created the client: were the client's events run in
    // another instance, `inboundOf` there would not know it and the relay would throw.
    let ws = Workspace::new();
    ws.write(
        "bridge/a.websocket",
        r#"{"handler": "bridge/a", "endpoint": "a", "instances": 2}"#,
    )
    .write(
        "bridge/a.js",
        r#"
        const websockets = require("net/websockets");
        const me = Math.random().toString(36).slice(2, 10);
        const clientOf = new Map(); // inbound connection id -> client to B
        const inboundOf = new Map(); // client id -> inbound connection
        exports.onMessage = (m, s) => {
          if (!s.endpoint) return inboundOf.get(s.id).send(`${me} relayed: ${m}`);
          if (m === "who") return me;
          const client = clientOf.get(s.id);
          if (client) return client.send(m);
          const created = websockets.createWebsocket(m, "bridge/a");
          clientOf.set(s.id, created);
          inboundOf.set(created.id, s);
        };
        "#,
    )
    .endpoint("other", "b", "other/b")
    .write("other/b.js", "exports.onMessage = (m) => `B says ${m}`;");
    let server = Server::start(ws.path());
    let mut first = server.connect("a").await;
    let mut second = server.connect("a").await;
    let first_instance = ask(&mut first, "who").await;
    let second_instance = ask(&mut second, "who").await;
    assert_ne!(first_instance, second_instance);
    for client in [&mut first, &mut second] {
        send_text(client, &server.ws_url("b")).await;
    }
    assert_eq!(
        ask(&mut first, "one").await,
        format!("{first_instance} relayed: B says one")
    );
    assert_eq!(
        ask(&mut second, "two").await,
        format!("{second_instance} relayed: B says two")
    );
    assert_eq!(server.stderr.count(|l| l.contains("TypeError")), 0);
}
