//! Outbound clients (`createWebsocket`) against Python's `websockets` server, against
//! Switchboard's own endpoints, over TLS, and in every failure mode, with 4D's event order.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::support::*;

/// Python's `websockets` server from tests/fixtures/ws_server.py; killed when dropped.
struct PythonServer {
    child: Child,
    port: u16,
}

impl PythonServer {
    fn start(tls: Option<(&std::path::Path, &std::path::Path)>) -> PythonServer {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ws_server.py");
        let mut command = Command::new("python3");
        command.arg(script);
        if let Some((cert, key)) = tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (the test command installs Python's websockets)");
        let stdout = child.stdout.take().unwrap();
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("PORT ") {
                    let _ = found.send(port.trim().parse::<u16>().unwrap());
                }
            }
        });
        let port = port.recv_timeout(TIMEOUT).expect(
            "the Python websockets server did not start (is `pip install websockets` done?)",
        );
        PythonServer { child, port }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A handler that runs JavaScript sent by the test on its control connection, and reports every
/// client event back on that connection as JSON.
const CONTROL_HANDLER: &str = r#"
const websockets = require("net/websockets");
const state = {};
let control = null;
const report = (event) => control && control.send(JSON.stringify(event));
const show = (m) => (m instanceof Uint8Array ? { bytes: Array.from(m) } : m);
exports.onOpen = (s) => {
  if (s.endpoint) { control = s; return; }
  report({ ev: "open", id: s.id, status: s.status, protocol: s.protocol, method: websockets.getMethod() });
};
exports.onMessage = (m, s) => {
  if (s.endpoint) {
    try {
      const result = new Function("websockets", "state", m)(websockets, state);
      return JSON.stringify({ ev: "result", result: result === undefined ? null : result });
    } catch (e) {
      return JSON.stringify({ ev: "result", thrown: `${e.name}: ${e.message}` });
    }
  }
  report({ ev: "message", id: s.id, data: show(m), type: typeof m });
};
exports.onError = (e, s) => { if (!s.endpoint) report({ ev: "error", id: s.id, error: String(e) }); };
exports.onClose = (s, info) => {
  if (s.endpoint) return;
  report({ ev: "close", id: s.id, code: info.code, reason: info.reason, wasClean: info.wasClean,
    status: s.status, listed: websockets.getClients().some((c) => c.id === s.id) });
};
"#;

struct Control {
    server: Server,
    socket: Client,
    _workspace: Workspace,
}

impl Control {
    async fn start(extra: impl FnOnce(&Workspace)) -> Control {
        let workspace = Workspace::new();
        workspace
            .endpoint("t", "ctl", "t/ctl")
            .write("t/ctl.js", CONTROL_HANDLER);
        extra(&workspace);
        let server = Server::start(workspace.path());
        let socket = server.connect("ctl").await;
        Control {
            server,
            socket,
            _workspace: workspace,
        }
    }

    /// Runs `code` in the handler's isolate; returns its result, or panics with what it threw.
    async fn run(&mut self, code: &str) -> Value {
        let reply = self.run_raw(code).await;
        if let Some(thrown) = reply.get("thrown") {
            panic!("{code} threw {thrown}");
        }
        reply["result"].clone()
    }

    /// Opens `state.c` to the Python server on `port`, handled by this handler, and waits for
    /// its onOpen.
    async fn open_client(&mut self, port: u16) {
        self.run(&format!(
            r#"state.c = websockets.createWebsocket("ws://127.0.0.1:{port}/", "t/ctl");"#
        ))
        .await;
        assert_eq!(self.event().await["ev"], "open");
    }

    /// Runs `code`, returning `{result}` or `{thrown}`.
    async fn run_raw(&mut self, code: &str) -> Value {
        send_text(&mut self.socket, code).await;
        let event = self.event().await;
        assert_eq!(
            event["ev"], "result",
            "unexpected event before the result of {code}: {event}"
        );
        event
    }

    async fn event(&mut self) -> Value {
        serde_json::from_str(&next_text(&mut self.socket).await).unwrap()
    }

    /// Client events until (and including) its close.
    async fn events_until_close(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.event().await;
            let done = event["ev"] == "close";
            events.push(event);
            if done {
                return events;
            }
        }
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["ev"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn talks_to_python_websockets_text_binary_headers_and_close() {
    let python = PythonServer::start(None);
    let mut control = Control::start(|_| {}).await;
    let status = control
        .run(&format!(
            r#"state.c = websockets.createWebsocket("ws://127.0.0.1:{}/", "t/ctl", {{
                 headers: {{ "X-Token": "abc", "X-Multi": ["1", "2"], Cookie: "yummy=choco; tasty=strawberry" }},
                 protocols: ["chat.v1"] }});
               const statusAtOnce = state.c.status;
               state.c.send("hi");
               state.c.send(new Uint8Array([1, 2, 3]));
               state.c.send("headers");
               state.c.send({{ k: [1, "two"] }});
               state.c.send("protocol");
               return [statusAtOnce, typeof state.c.id, state.c.uri === state.c.url, state.c.handler];"#,
            python.port
        ))
        .await;
    assert_eq!(status, json!(["Connecting", "number", true, "t/ctl.js"]));
    let open = control.event().await;
    assert_eq!(open["ev"], "open");
    assert_eq!(open["status"], "Connected");
    assert_eq!(open["protocol"], "chat.v1");
    assert_eq!(open["method"], "onopen");
    let hi = control.event().await;
    assert_eq!(
        (hi["data"].clone(), hi["type"].clone()),
        (json!("hi"), json!("string"))
    );
    let bytes = control.event().await;
    assert_eq!(bytes["data"], json!({"bytes": [1, 2, 3]}));
    let headers: Vec<(String, String)> =
        serde_json::from_str(control.event().await["data"].as_str().unwrap()).unwrap();
    let has = |name: &str, value: &str| {
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    };
    assert!(has("x-token", "abc"), "{headers:?}");
    assert!(has("x-multi", "1") && has("x-multi", "2"), "{headers:?}");
    assert!(
        has("cookie", "yummy=choco; tasty=strawberry"),
        "{headers:?}"
    );
    assert_eq!(control.event().await["data"], r#"{"k":[1,"two"]}"#);
    assert_eq!(control.event().await["data"], "chat.v1");
    let listed = control.run("return websockets.getClients();").await;
    assert_eq!(listed[0]["status"], "Connected");
    assert_eq!(listed[0]["handler"], "t/ctl.js");

    // The server closes with a code and reason: onClose once, the client gone from getClients().
    control
        .run(r#"state.c.send("close:4002:done with you");"#)
        .await;
    let events = control.events_until_close().await;
    assert_eq!(kinds(&events), ["close"]);
    assert_eq!(events[0]["code"], 4002);
    assert_eq!(events[0]["reason"], "done with you");
    assert_eq!(events[0]["wasClean"], true);
    assert_eq!(events[0]["status"], "Closed");
    assert_eq!(events[0]["listed"], false);
    assert_eq!(
        control.run("return websockets.getClients();").await,
        json!([])
    );
    let thrown = control.run_raw(r#"state.c.send("late");"#).await;
    assert!(
        thrown["thrown"]
            .as_str()
            .unwrap()
            .contains("the client is Closed"),
        "{thrown}"
    );
}

#[tokio::test]
async fn the_client_closes_with_its_own_code_and_validates_it() {
    let python = PythonServer::start(None);
    let mut control = Control::start(|_| {}).await;
    control.open_client(python.port).await;
    for (code, expected) in [
        (
            "state.c.close(1001)",
            "RangeError: close: code must be 1000 or 3000-4999, got 1001",
        ),
        (
            "state.c.close(2999)",
            "RangeError: close: code must be 1000 or 3000-4999, got 2999",
        ),
        (
            "state.c.close(5000)",
            "RangeError: close: code must be 1000 or 3000-4999, got 5000",
        ),
        (
            "state.c.close(3000.5)",
            "RangeError: close: code must be 1000 or 3000-4999, got 3000.5",
        ),
        (
            "state.c.terminate(4000, 'é'.repeat(62))",
            "RangeError: close: reason must be at most 123 bytes of UTF-8, got 124",
        ),
    ] {
        assert_eq!(control.run_raw(code).await["thrown"], expected, "{code}");
    }
    assert_eq!(control.run("return state.c.status;").await, "Connected");
    // "Closing" at once; "Closed" if the handshake already finished (a busy machine can pause
    // this isolate between the two calls).
    let status = control
        .run("state.c.terminate(4100, 'finished'); return state.c.status;")
        .await;
    assert!(status == "Closing" || status == "Closed", "{status}");
    let events = control.events_until_close().await;
    assert_eq!(kinds(&events), ["close"]);
    assert_eq!(
        (events[0]["code"].clone(), events[0]["reason"].clone()),
        (json!(4100), json!("finished"))
    );
    assert_eq!(events[0]["wasClean"], true);
    let thrown = control.run_raw(r#"state.c.send("late");"#).await;
    assert_eq!(
        thrown["thrown"],
        "Error: client 1: cannot send: the client is Closed"
    );
}

#[tokio::test]
async fn send_and_close_while_connecting_deliver_in_order() {
    let mut control = Control::start(|ws| {
        ws.endpoint("rec", "rec", "rec/h").write(
            "rec/h.js",
            "const got = []; exports.onMessage = (m) => { got.push(m); console.log(`rec got ${got.join(',')}`); };",
        );
    })
    .await;
    let url = control.server.ws_url("rec");
    control
        .run(&format!(
            r#"const c = websockets.createWebsocket("{url}", "t/ctl");
               for (let i = 0; i < 5; i++) c.send(`m${{i}}`);
               c.close();"#
        ))
        .await;
    let events = control.events_until_close().await;
    assert_eq!(kinds(&events), ["open", "close"]);
    assert_eq!(events[1]["code"], 1000);
    control
        .server
        .stderr
        .wait_for("all five queued messages at the endpoint", |l| {
            l.contains("rec got m0,m1,m2,m3,m4")
        });
}

#[tokio::test]
async fn bridges_one_endpoint_to_another() {
    let ws = Workspace::new();
    ws.endpoint("bridge", "a", "bridge/a")
        .write(
            "bridge/a.js",
            r#"
            // A's first message names B's URL; after that A relays both ways.
            const { websockets } = require("sdk/net");
            const clientOf = new Map(); // inbound connection id -> client to B
            const inboundOf = new Map(); // client id -> inbound connection
            exports.onMessage = (m, s) => {
              if (!s.endpoint) return inboundOf.get(s.id).send(`relayed: ${m}`);
              const client = clientOf.get(s.id);
              if (client) return client.send(m);
              const created = websockets.createWebsocket(m, "bridge/a");
              clientOf.set(s.id, created);
              inboundOf.set(created.id, s);
            };
            exports.onClose = (s) => { if (s.endpoint) clientOf.get(s.id)?.close(); };
            "#,
        )
        .endpoint("other", "b", "other/b")
        .write("other/b.js", "exports.onMessage = (m) => `B says ${m}`;");
    let server = Server::start(ws.path());
    let mut client = server.connect("a").await;
    send_text(&mut client, &server.ws_url("b")).await;
    assert_eq!(ask(&mut client, "one").await, "relayed: B says one");
    assert_eq!(ask(&mut client, "two").await, "relayed: B says two");
}

/// A self-signed certificate for 127.0.0.1 and localhost, written to PEM files.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[tokio::test]
async fn wss_with_a_self_signed_certificate_needs_ca_or_insecure() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let python = PythonServer::start(Some((&cert, &key)));
    let url = format!("wss://localhost:{}/", python.port);
    let mut control = Control::start(|ws| {
        ws.write("t/certs/ca.pem", &std::fs::read_to_string(&cert).unwrap());
    })
    .await;

    // Refused by default, with the reason.
    control
        .run(&format!(r#"websockets.createWebsocket("{url}", "t/ctl");"#))
        .await;
    let events = control.events_until_close().await;
    assert_eq!(kinds(&events), ["error", "close"]);
    let error = events[0]["error"].as_str().unwrap();
    assert!(
        error.contains("TLS handshake failed") && error.contains("certificate"),
        "{error}"
    );
    assert_eq!(
        (events[1]["code"].clone(), events[1]["wasClean"].clone()),
        (json!(1006), json!(false))
    );

    // Trusted through tls.ca, as a path from the workspace root and as PEM text.
    let pem = serde_json::to_string(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    for ca in [r#""t/certs/ca.pem""#.to_string(), pem] {
        control
            .run(&format!(
                r#"state.c = websockets.createWebsocket("{url}", "t/ctl", {{ tls: {{ ca: {ca} }} }}); state.c.send("secure");"#
            ))
            .await;
        assert_eq!(control.event().await["ev"], "open");
        assert_eq!(control.event().await["data"], "secure");
        control.run("state.c.close();").await;
        assert_eq!(kinds(&control.events_until_close().await), ["close"]);
    }

    // Accepted with tls.insecure.
    control
        .run(&format!(
            r#"state.c = websockets.createWebsocket("{url}", "t/ctl", {{ tls: {{ insecure: true }} }}); state.c.send("anyway");"#
        ))
        .await;
    assert_eq!(control.event().await["ev"], "open");
    assert_eq!(control.event().await["data"], "anyway");
}

#[tokio::test]
async fn failures_to_connect_report_one_error_then_close_1006() {
    let mut control = Control::start(|_| {}).await;
    // A port with nothing listening.
    let refused_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // A server that accepts and never answers the handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let cases = [
        (
            format!("ws://127.0.0.1:{refused_port}/"),
            "{}".to_string(),
            "connection refused",
        ),
        (
            format!("ws://127.0.0.1:{silent_port}/"),
            "{ connectTimeoutMs: 300 }".to_string(),
            "timed out after 300 ms",
        ),
        (
            control.server.ws_url("no-such-endpoint"),
            "{}".to_string(),
            "the server refused the upgrade with HTTP 404",
        ),
    ];
    for (url, options, cause) in cases {
        control
            .run(&format!(
                r#"state.c = websockets.createWebsocket("{url}", "t/ctl", {options}); state.c.send("queued");"#
            ))
            .await;
        let events = control.events_until_close().await;
        assert_eq!(kinds(&events), ["error", "close"], "{url}: {events:?}");
        let error = events[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("cannot connect to {url}: ")),
            "{error}"
        );
        assert!(error.contains(cause), "{error}");
        assert_eq!(events[1]["code"], 1006);
        assert_eq!(events[1]["wasClean"], false);
        assert_eq!(events[1]["listed"], false);
    }
    assert_eq!(
        control.run("return websockets.getClients().length;").await,
        0
    );
}

#[tokio::test]
async fn bad_arguments_throw_clear_errors() {
    let mut control = Control::start(|_| {}).await;
    for (code, expected) in [
        (
            r#"websockets.createWebsocket("http://x/", "t/ctl")"#,
            r#"TypeError: createWebsocket: uri "http://x/" must start with ws:// or wss://"#,
        ),
        (
            r#"websockets.createWebsocket(42, "t/ctl")"#,
            "TypeError: createWebsocket: uri must be a ws:// or wss:// URL string, got number 42",
        ),
        (
            r#"websockets.createWebsocket("ws://127.0.0.1:1/", "t/none")"#,
            r#"TypeError: createWebsocket: handler "t/none" not found: tried t/none, t/none.js, t/none.mjs, t/none.cjs, t/none.ts, t/none.mts, t/none.cts"#,
        ),
        (
            r#"websockets.createWebsocket("ws://127.0.0.1:1/", "../x")"#,
            r#"TypeError: createWebsocket: handler "../x" uses "..": it may not leave the workspace"#,
        ),
        (
            r#"websockets.createWebsocket("ws://127.0.0.1:1/", "t/ctl", { colour: 1 })"#,
            "TypeError: createWebsocket: unknown option \"colour\"; known options: headers, protocols, dataType, tls, connectTimeoutMs, compression, engine",
        ),
        (
            r#"websockets.createWebsocket("ws://127.0.0.1:1/", "t/ctl", { compression: "on" })"#,
            "TypeError: createWebsocket: option \"compression\" must be a boolean, got \"on\"",
        ),
        (
            r#"websockets.createWebsocket("ws://127.0.0.1:1/", "t/ctl", { dataType: "xml" })"#,
            "TypeError: createWebsocket: dataType must be one of text, blob, object, got \"xml\"",
        ),
        (
            r#"websockets.createWebsocket("wss://127.0.0.1:1/", "t/ctl", { tls: { ca: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----" } })"#,
            "TypeError: createWebsocket: tls.ca: ",
        ),
    ] {
        let thrown = control.run_raw(code).await;
        let thrown = thrown["thrown"].as_str().unwrap_or_default().to_string();
        assert!(thrown.starts_with(expected), "{code}: {thrown}");
    }
    // Dirigible's engine argument is accepted.
    control
        .run(r#"websockets.createWebsocket("ws://127.0.0.1:1/", "t/ctl", "graalvm");"#)
        .await;
    assert_eq!(
        kinds(&control.events_until_close().await),
        ["error", "close"]
    );
}

#[tokio::test]
async fn data_types_text_blob_and_object() {
    let python = PythonServer::start(None);
    let mut control = Control::start(|_| {}).await;
    let url = format!("ws://127.0.0.1:{}/", python.port);
    control
        .run(&format!(
            r#"state.blob = websockets.createWebsocket("{url}", "t/ctl", {{ dataType: "blob" }}); state.blob.send("AB");"#
        ))
        .await;
    assert_eq!(control.event().await["ev"], "open");
    assert_eq!(control.event().await["data"], json!({"bytes": [65, 66]}));
    control.run("state.blob.close();").await;
    control.events_until_close().await;

    control
        .run(&format!(
            r#"state.obj = websockets.createWebsocket("{url}", "t/ctl", {{ dataType: "object" }});
               state.obj.send("not json"); state.obj.send({{ a: [1, 2] }}); state.obj.send("{{broken"); state.obj.send("7");"#
        ))
        .await;
    assert_eq!(control.event().await["ev"], "open");
    let error = control.event().await;
    assert_eq!(error["ev"], "error");
    let reason = error["error"].as_str().unwrap();
    assert!(
        reason.starts_with("message is not JSON (dataType \"object\")")
            && reason.contains("\"not json\""),
        "{reason}"
    );
    let parsed = control.event().await;
    assert_eq!(
        (parsed["data"].clone(), parsed["type"].clone()),
        (json!({"a": [1, 2]}), json!("object"))
    );
    // A second bad frame is logged, not a second onError (4D: at most one onError).
    let number = control.event().await;
    assert_eq!(
        (number["data"].clone(), number["type"].clone()),
        (json!(7), json!("number"))
    );
    control
        .server
        .stderr
        .wait_for("the second bad frame logged", |l| {
            l.contains("further error not passed to onError")
        });
    assert_eq!(control.run("return state.obj.status;").await, "Connected");
}

#[tokio::test]
async fn clients_are_listed_and_usable_from_another_isolate() {
    let python = PythonServer::start(None);
    let mut control = Control::start(|ws| {
        ws.endpoint("o", "other", "o/other").write(
            "o/other.js",
            r#"
            const websockets = require("net/websockets");
            exports.onMessage = (m) => {
              const listed = websockets.getClients();
              const byId = websockets.getClient(listed[0].id);
              const byHandler = websockets.getClientByHandler("t/ctl");
              byId.send("sent from another isolate");
              return JSON.stringify({ listed, sameId: byHandler.id === byId.id, missing: websockets.getClient(999), none: websockets.getClientByHandler("o/other") });
            };
            "#,
        );
    })
    .await;
    control.open_client(python.port).await;
    let mut other = control.server.connect("other").await;
    let seen: Value = serde_json::from_str(&ask(&mut other, "look").await).unwrap();
    assert_eq!(
        seen["listed"],
        json!([{"id": 1, "uri": format!("ws://127.0.0.1:{}/", python.port), "handler": "t/ctl.js", "status": "Connected"}])
    );
    assert_eq!(seen["sameId"], true);
    assert_eq!(seen["missing"], Value::Null);
    assert_eq!(seen["none"], Value::Null);
    // The echo of what the other isolate sent arrives at the client's own handler.
    assert_eq!(control.event().await["data"], "sent from another isolate");
}

#[tokio::test]
async fn switchboard_run_runs_the_seed_example_and_exits_when_the_client_closes() {
    let ws = Workspace::new();
    ws.endpoint("rec", "rec", "rec/h").write(
        "rec/h.js",
        "exports.onMessage = (m) => { console.log(`rec got ${m}`); };",
    );
    let server = Server::start(ws.path());
    // Dirigible's client example, as documented but for the URI.
    let client_example = r#"var websockets = require("net/v4/websockets");
var uri = "URI";
var handler = "my-project/ws-handler"

function initialize() {
    console.log("Connect to: " + uri);
    var websocket = websockets.createWebsocket(uri, handler);
    websocket.send("hello");
}

initialize();

websockets.getClientByHandler(handler).close();
"#;
    let handler_example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects/my-project/ws-handler.js"),
    )
    .unwrap();
    let scripts = Workspace::new();
    scripts
        .write(
            "my-project/client.js",
            &client_example.replace("URI", &server.ws_url("rec")),
        )
        .write("my-project/ws-handler.js", &handler_example)
        .write(
            "my-project/later.mjs",
            &format!(
                r#"import {{ websockets }} from "sdk/net";
                const c = websockets.createWebsocket("{}", "my-project/ws-handler");
                setTimeout(() => {{ c.send("after a timer"); c.close(); }}, 50);"#,
                server.ws_url("rec")
            ),
        )
        .write(
            "my-project/typed.ts",
            &format!(
                r#"import {{ Websockets, type WebsocketClient }} from "@aerokit/sdk/net";
                const client: WebsocketClient = Websockets.createWebsocket("{}", "my-project/ws-handler");
                client.send("from TypeScript" as string);
                client.close();"#,
                server.ws_url("rec")
            ),
        );
    for (script, expected) in [
        ("client.js", "rec got hello"),
        ("later.mjs", "rec got after a timer"),
        ("typed.ts", "rec got from TypeScript"),
    ] {
        let output = tokio::task::spawn_blocking({
            let file = scripts.path().join("my-project").join(script);
            move || {
                std::process::Command::new(binary())
                    .arg("run")
                    .arg(file)
                    .output()
                    .unwrap()
            }
        });
        let output = tokio::time::timeout(TIMEOUT, output)
            .await
            .expect("switchboard run did not exit")
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{log}");
        assert!(log.contains("Connection openned."), "{log}");
        assert!(log.contains("Connection closed."), "{log}");
        server.stderr.wait_for(expected, |l| l.contains(expected));
    }
}
