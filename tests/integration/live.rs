//! The live workspace: projects added, handlers edited, broken and fixed, endpoints renamed and
//! removed, all while clients stay connected, without a restart.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn a_project_dropped_in_serves_at_once() {
    let ws = Workspace::new();
    let server = Server::start(ws.path());
    assert_eq!(server.get("/websockets/v4/service/late").await.status, 404);
    ws.write("late/h.js", "exports.onMessage = (m) => `late ${m}`;")
        .endpoint("late", "late", "late/h");
    server
        .stderr
        .wait_for("the new endpoint", reloaded("endpoint late bound"));
    let mut client = server.connect("late").await;
    assert_eq!(ask(&mut client, "hi").await, "late hi");
}

#[tokio::test]
async fn an_edited_handler_answers_the_next_message_on_the_same_connection() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write(
            "p/h.js",
            "console.log('top v1'); let n = 0; exports.onMessage = (m) => `v1 #${++n} ${m}`;",
        )
        .write("p/index.html", "<p>one</p>");
    let server = Server::start(ws.path());
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, "a").await, "v1 #1 a");
    assert_eq!(ask(&mut client, "b").await, "v1 #2 b");

    ws.write(
        "p/h.js",
        "const lib = require('./lib'); console.log('top v2'); let n = 0; exports.onMessage = (m) => `v2 #${++n} ${lib.tag(m)}`;",
    )
    .write("p/lib.js", "exports.tag = (m) => `<${m}>`;");
    server
        .stderr
        .wait_for("the reload", reloaded("handler p/h.js reloaded"));
    // Same connection, new code, fresh module state.
    assert_eq!(ask(&mut client, "c").await, "v2 #1 <c>");
    // A module the handler imports counts as its code.
    ws.write("p/lib.js", "exports.tag = (m) => `[${m}]`;");
    server
        .stderr
        .wait_for("the reload for lib.js", reloaded("(p/lib.js changed)"));
    assert_eq!(ask(&mut client, "d").await, "v2 #1 [d]");
    // The new module's top level ran once per load.
    assert_eq!(server.stderr.count(|l| l.contains("top v2")), 2);
    assert_eq!(server.stderr.count(|l| l.contains("top v1")), 1);
    // Static files are read fresh.
    ws.write("p/index.html", "<p>two</p>");
    assert_eq!(
        server.get("/services/web/p/index.html").await.body,
        "<p>two</p>"
    );
}

#[tokio::test]
async fn a_broken_handler_keeps_the_last_good_version_until_fixed() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write("p/h.js", "exports.onMessage = (m) => `good ${m}`;");
    let server = Server::start(ws.path());
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, "1").await, "good 1");

    ws.write(
        "p/h.js",
        "exports.onMessage = (m) => {\n  return m +;\n};\n",
    );
    let line = server
        .stderr
        .wait_for("the failed reload", reloaded("NOT reloaded"));
    assert!(line.contains("p/h.js:2:13: SyntaxError"), "{line}");
    assert_eq!(ask(&mut client, "2").await, "good 2");
    let list: serde_json::Value =
        serde_json::from_str(&server.get("/websockets/v4/service").await.body).unwrap();
    assert!(
        list[0]["error"].as_str().unwrap().contains("p/h.js:2:13"),
        "{list}"
    );
    assert!(server.get("/").await.body.contains("p/h.js:2:13"));

    // A top level that throws is refused the same way.
    ws.write("p/h.js", "throw new Error('not today');\n");
    server
        .stderr
        .wait_for_count("the second failed reload", 2, reloaded("NOT reloaded"));
    assert!(
        server
            .stderr
            .text()
            .contains("p/h.js:1:7: Error: not today"),
        "{}",
        server.stderr.text()
    );
    assert_eq!(ask(&mut client, "3").await, "good 3");

    ws.write("p/h.js", "exports.onMessage = (m) => `fixed ${m}`;");
    server
        .stderr
        .wait_for("the fix", reloaded("handler p/h.js reloaded"));
    assert_eq!(ask(&mut client, "4").await, "fixed 4");
    let list: serde_json::Value =
        serde_json::from_str(&server.get("/websockets/v4/service").await.body).unwrap();
    assert!(list[0].get("error").is_none(), "{list}");
}

#[tokio::test]
async fn a_handler_broken_from_the_start_serves_once_fixed() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write("p/h.js", "exports.onMessage = ;");
    let server = Server::start(ws.path());
    assert_eq!(server.get("/websockets/v4/service/e").await.status, 500);
    ws.write("p/h.js", "exports.onMessage = (m) => `now ${m}`;");
    server.stderr.wait_for(
        "the fix",
        reloaded("handler p/h.js loaded, its error is fixed"),
    );
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, "ok").await, "now ok");
}

#[tokio::test]
async fn renaming_an_endpoint_closes_the_old_one_with_1001() {
    let ws = Workspace::new();
    ws.write(
        "p/e.websocket",
        r#"{"handler": "p/h", "endpoint": "old-name"}"#,
    )
    .write("p/h.js", "exports.onMessage = (m) => m;");
    let server = Server::start(ws.path());
    let mut client = server.connect("old-name").await;
    assert_eq!(ask(&mut client, "x").await, "x");
    ws.write(
        "p/e.websocket",
        r#"{"handler": "p/h", "endpoint": "new-name"}"#,
    );
    expect_close(&mut client, 1001, "endpoint old-name removed").await;
    server
        .stderr
        .wait_for("the rename", reloaded("endpoint new-name bound"));
    assert_eq!(
        server.get("/websockets/v4/service/old-name").await.status,
        404
    );
    let mut renamed = server.connect("new-name").await;
    assert_eq!(ask(&mut renamed, "y").await, "y");

    // A new handler for the same endpoint name: rebound, its connections closed.
    ws.write("p/other.js", "exports.onMessage = (m) => `other ${m}`;")
        .write(
            "p/e.websocket",
            r#"{"handler": "p/other", "endpoint": "new-name"}"#,
        );
    expect_close(&mut renamed, 1001, "endpoint new-name rebound to p/other").await;
    server
        .stderr
        .wait_for("the rebinding", reloaded("endpoint new-name rebound"));
    let mut again = server.connect("new-name").await;
    assert_eq!(ask(&mut again, "z").await, "other z");
}

#[tokio::test]
async fn deleting_a_project_closes_its_connections_then_404() {
    let ws = Workspace::new();
    ws.endpoint("gone", "gone", "gone/h")
        .write("gone/h.js", "exports.onMessage = (m) => m;")
        .endpoint("stays", "stays", "stays/h")
        .write("stays/h.js", "exports.onMessage = (m) => `still ${m}`;");
    let server = Server::start(ws.path());
    let mut doomed = server.connect("gone").await;
    let mut other = server.connect("stays").await;
    assert_eq!(ask(&mut doomed, "x").await, "x");
    std::fs::remove_dir_all(ws.path().join("gone")).unwrap();
    expect_close(&mut doomed, 1001, "endpoint gone removed").await;
    server
        .stderr
        .wait_for("the removal", reloaded("endpoint gone removed"));
    assert_eq!(server.get("/websockets/v4/service/gone").await.status, 404);
    assert_eq!(ask(&mut other, "here").await, "still here");
    server
        .stderr
        .wait_for("the unload", reloaded("handler gone/h.js unloaded"));
}

#[tokio::test]
async fn fifty_projects_copied_in_at_once_all_serve_within_five_seconds() {
    let ws = Workspace::new();
    let server = Server::start(ws.path());
    let staging = tempfile::tempdir().unwrap();
    for i in 0..50 {
        let project = staging.path().join(format!("p{i}"));
        std::fs::create_dir_all(&project).unwrap();
        std::fs::write(
            project.join("h.js"),
            format!("exports.onMessage = (m) => `p{i} ${{m}}`;"),
        )
        .unwrap();
        std::fs::write(
            project.join("e.websocket"),
            format!(r#"{{"handler": "p{i}/h", "endpoint": "e{i}"}}"#),
        )
        .unwrap();
    }
    let started = Instant::now();
    // Copied file by file, as a file manager or `cp -r` does.
    for i in 0..50 {
        let to = ws.path().join(format!("p{i}"));
        std::fs::create_dir_all(&to).unwrap();
        for file in ["h.js", "e.websocket"] {
            std::fs::copy(staging.path().join(format!("p{i}/{file}")), to.join(file)).unwrap();
        }
    }
    for i in 0..50 {
        let bound = format!("endpoint e{i} bound");
        server.stderr.wait_for(&bound, |l| l.contains(&bound));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    for i in 0..50 {
        let bound = format!("endpoint e{i} bound");
        assert_eq!(
            server.stderr.count(|l| l.contains(&bound)),
            1,
            "{bound} more than once"
        );
    }
    let list: serde_json::Value =
        serde_json::from_str(&server.get("/websockets/v4/service").await.body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 50);
    for i in [0, 17, 49] {
        let mut client = server.connect(&format!("e{i}")).await;
        assert_eq!(ask(&mut client, "hi").await, format!("p{i} hi"));
    }
}

#[tokio::test]
async fn clients_opened_by_replaced_code_are_closed_with_1001() {
    let ws = Workspace::new();
    ws.endpoint("echo", "echo", "echo/h")
        .write("echo/h.js", "exports.onMessage = (m) => m;")
        .endpoint("p", "e", "p/h")
        .write(
            "p/h.js",
            r#"
            const websockets = require("net/websockets");
            exports.onMessage = (m, s) => {
              if (s.endpoint) { websockets.createWebsocket(m, "p/watcher"); return "created"; }
            };
            "#,
        )
        .write(
            "p/watcher.js",
            "exports.onOpen = () => console.log('watched client open'); exports.onClose = (c, e) => console.log(`watched client closed ${e.code} ${e.reason}`);",
        );
    let server = Server::start(ws.path());
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, &server.ws_url("echo")).await, "created");
    server
        .stderr
        .wait_for("the client", |l| l.contains("watched client open"));
    ws.write("p/h.js", "exports.onMessage = () => 'edited';");
    server
        .stderr
        .wait_for("the reload", reloaded("1 client(s) of the old code closed"));
    server.stderr.wait_for("the client's close", |l| {
        l.contains("watched client closed 1001 handler p/h.js reloaded")
    });
    assert_eq!(ask(&mut client, "x").await, "edited");
}

#[tokio::test]
async fn no_watch_serves_the_workspace_as_it_was() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write("p/h.js", "exports.onMessage = () => 'first';");
    let server = Server::start_with(ws.path(), &["--no-watch"]);
    assert!(!server.stdout.text().contains("watching"));
    ws.write("p/h.js", "exports.onMessage = () => 'second';")
        .endpoint("q", "q", "q/h")
        .write("q/h.js", "exports.onMessage = () => 'q';");
    // Nothing can be awaited for a change that must not happen: give a watcher far more than
    // its debounce time to act, then check that nothing did.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, "x").await, "first");
    assert_eq!(server.get("/websockets/v4/service/q").await.status, 404);
    assert!(!server.stderr.text().contains("reload in"));
}

#[tokio::test]
async fn two_hundred_reloads_leak_no_isolates_or_memory() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write("p/h.js", "exports.onMessage = (m) => `v0 ${m}`;");
    let server = Server::start_with(ws.path(), &["--watch-debounce-ms", "30"]);
    let mut client = server.connect("e").await;
    let edit = |n: usize| {
        // Each version allocates some module state, so a leaked isolate would show.
        ws.write(
            "p/h.js",
            &format!("const state = new Array(20000).fill({n}); exports.onMessage = (m) => `v{n} ${{m}} ${{state.length}}`;"),
        );
    };
    let reload_line = reloaded("handler p/h.js reloaded");
    // Warm-up: allocator arenas and caches settle before the baseline is taken.
    for n in 1..=20 {
        edit(n);
        server
            .stderr
            .wait_for_count("a warm-up reload", n, &reload_line);
    }
    assert_eq!(ask(&mut client, "x").await, "v20 x 20000");
    let baseline_memory = server.metric("process_resident_memory_bytes").await;
    for n in 21..=220 {
        edit(n);
        server.stderr.wait_for_count("a reload", n, &reload_line);
    }
    assert_eq!(ask(&mut client, "y").await, "v220 y 20000");
    // Replaced isolates end once they have run their queued events.
    let deadline = Instant::now() + TIMEOUT;
    while server.metric("switchboard_isolates_alive").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "isolates still alive: {}",
            server.get("/metrics").await.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let memory = server.metric("process_resident_memory_bytes").await;
    let grown = (memory - baseline_memory) / (1024.0 * 1024.0);
    eprintln!(
        "resident memory: {:.1} MiB after warm-up, {:.1} MiB after 200 more reloads",
        baseline_memory / 1048576.0,
        memory / 1048576.0
    );
    // One leaked isolate holds at least its 20,000-element array and the engine's own heap
    // (~1 MiB): 200 of them would add hundreds of MiB.
    assert!(
        grown < 40.0,
        "resident memory grew by {grown:.1} MiB over 200 reloads"
    );
}

#[tokio::test]
async fn an_es_module_handler_and_its_imports_reload_with_fresh_state() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h")
        .write(
            "p/h.mjs",
            "import { count } from './counter.mjs'; export const onMessage = (m) => `one ${count()} ${m}`;",
        )
        .write("p/counter.mjs", "let n = 0; export const count = () => ++n;");
    let server = Server::start(ws.path());
    let mut client = server.connect("e").await;
    assert_eq!(ask(&mut client, "a").await, "one 1 a");
    assert_eq!(ask(&mut client, "b").await, "one 2 b");
    ws.write(
        "p/h.mjs",
        "import { count } from './counter.mjs'; export const onMessage = (m) => `two ${count()} ${m}`;",
    );
    server
        .stderr
        .wait_for("the reload", reloaded("handler p/h.mjs reloaded"));
    // The imported module is instantiated afresh too: its counter starts again.
    assert_eq!(ask(&mut client, "c").await, "two 1 c");
    ws.write(
        "p/counter.mjs",
        "let n = 100; export const count = () => ++n;",
    );
    server.stderr.wait_for(
        "the reload for counter.mjs",
        reloaded("(p/counter.mjs changed)"),
    );
    assert_eq!(ask(&mut client, "d").await, "two 101 d");
}

#[tokio::test]
async fn timers_of_replaced_code_stop() {
    let ws = Workspace::new();
    ws.endpoint("p", "e", "p/h").write(
        "p/h.js",
        "setInterval(() => console.log('tick from v1'), 20); exports.onMessage = () => 'v1';",
    );
    let server = Server::start(ws.path());
    server
        .stderr
        .wait_for_count("v1 ticking", 2, |l| l.contains("tick from v1"));
    ws.write(
        "p/h.js",
        "setInterval(() => console.log('tick from v2'), 20); exports.onMessage = () => 'v2';",
    );
    server
        .stderr
        .wait_for("the reload", reloaded("handler p/h.js reloaded"));
    server
        .stderr
        .wait_for_count("v2 ticking", 3, |l| l.contains("tick from v2"));
    // v1's timer was cancelled at the reload: it did not tick while v2 ticked three times.
    let text = server.stderr.text();
    let last_v1 = text.rfind("tick from v1").unwrap();
    let reload_at = text.find("handler p/h.js reloaded").unwrap();
    let v2_ticks_after = text[reload_at..].matches("tick from v2").count();
    assert!(v2_ticks_after >= 2 && last_v1 < reload_at, "{text}");
}
