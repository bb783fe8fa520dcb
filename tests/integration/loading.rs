//! `serve --load lazy`: a handler loads on its first use (its errors then, `onStart` before its
//! first connection opens); handlers that tick load at start; a reload still applies.

use crate::support::*;

#[tokio::test]
async fn lazy_loading_loads_a_handler_at_its_first_connection_and_ticking_ones_at_start() {
    let ws = Workspace::new();
    ws.endpoint("lazy", "lazy", "lazy/h")
        .write(
            "lazy/h.js",
            r#"console.log("lazy module evaluated");
               exports.onStart = (e) => console.log(`lazy onStart ${e}`);
               exports.onOpen = () => console.log("lazy onOpen");
               exports.onMessage = (m) => `lazy ${m}`;"#,
        )
        .endpoint("broken", "broken", "broken/h")
        .write("broken/h.js", "exports.onMessage = (m) => ;")
        .write(
            "ticking/ticking.websocket",
            r#"{"handler": "ticking/h", "endpoint": "ticking", "service": {"interval": 50}}"#,
        )
        .write(
            "ticking/h.js",
            r#"exports.onTick = () => console.log("ticked");"#,
        );
    let server = Server::start_with(ws.path(), &["--load", "lazy"]);
    let listed = server.stdout.text();
    assert!(
        listed
            .lines()
            .any(|l| l.contains("endpoint lazy") && l.contains("(loads on first use)")),
        "{listed}"
    );
    // The ticking handler was loaded at start, and only it.
    server.stderr.wait_for("a tick", |l| l.contains("ticked"));
    assert_eq!(server.metric("switchboard_isolates_alive").await, 1.0);
    let log = server.stderr.text();
    assert!(!log.contains("lazy module evaluated"), "{log}");
    assert!(!log.contains("broken/h.js"), "{log}");

    let mut client = server.connect("lazy").await;
    assert_eq!(ask(&mut client, "hi").await, "lazy hi");
    assert_eq!(server.metric("switchboard_isolates_alive").await, 2.0);
    // The log is read by another thread: the reply can come before it has read the lines.
    server
        .stderr
        .wait_for("onOpen", |l| l.contains("lazy onOpen"));
    let log = server.stderr.text();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what} in {log}"))
    };
    assert!(at("lazy module evaluated") < at("lazy onStart lazy"));
    assert!(at("lazy onStart lazy") < at("lazy onOpen"));
    assert!(
        log.contains("handler lazy/h.js loaded on first use in"),
        "{log}"
    );
    // A second connection does not load or start it again.
    let mut again = server.connect("lazy").await;
    assert_eq!(ask(&mut again, "again").await, "lazy again");
    assert_eq!(server.stderr.count(|l| l.contains("lazy onStart")), 1);

    // The broken handler's error comes at its first use, naming the file, and is listed.
    let refused = connect_with(&server.ws_url("broken"), &[]).await.err();
    let (status, body) = refused.expect("the upgrade to a broken handler is refused");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("broken/h.js"), "{body}");
    let listing = server.get("/websockets/v4/service").await.body;
    assert!(listing.contains("broken/h.js"), "{listing}");

    // A loaded handler is reloaded when its file changes; an unloaded one stays unloaded.
    ws.write(
        "lazy/h.js",
        r#"exports.onStart = (e) => console.log(`lazy v2 onStart ${e}`);
           exports.onMessage = (m) => `lazy v2 ${m}`;"#,
    );
    server
        .stderr
        .wait_for("the reload", |l| l.contains("lazy v2 onStart lazy"));
    assert_eq!(ask(&mut client, "hi").await, "lazy v2 hi");
    ws.write("broken/h.js", "exports.onMessage = (m) => `fixed ${m}`;");
    let mut fixed = server.connect("broken").await;
    assert_eq!(ask(&mut fixed, "now").await, "fixed now");
}

#[tokio::test]
async fn unused_handlers_unload_and_load_afresh_on_their_next_use() {
    let ws = Workspace::new();
    for name in ["idle", "held"] {
        ws.endpoint(name, name, &format!("{name}/h")).write(
            &format!("{name}/h.js"),
            &format!(
                r#"let count = 0;
                   exports.onStart = () => console.log("{name} onStart");
                   exports.onStop = () => console.log("{name} onStop");
                   exports.onMessage = () => String(++count);"#
            ),
        );
    }
    let server = Server::start_with(ws.path(), &["--load", "lazy", "--unload-idle", "0.3"]);
    assert!(
        server
            .stdout
            .text()
            .contains("unload after 0.3 s unused (--unload-idle)"),
        "{}",
        server.stdout.text()
    );
    let mut idle = server.connect("idle").await;
    assert_eq!(ask(&mut idle, "count").await, "1");
    let mut held = server.connect("held").await;
    assert_eq!(ask(&mut held, "count").await, "1");
    drop(idle);

    // The handler whose connection closed is unloaded (onStop first); the one holding a
    // connection stays, and keeps its state.
    let line = server.stderr.wait_for("the unload", |l| {
        l.contains("unloaded after 0.3 s unused (--unload-idle)")
    });
    assert!(line.contains("idle/h.js"), "{line}");
    assert!(!line.contains("held/h.js"), "{line}");
    assert_eq!(server.stderr.count(|l| l.contains("idle onStop")), 1);
    assert_eq!(ask(&mut held, "count").await, "2");

    // Its next use loads it afresh: onStart again, module state new.
    let mut again = server.connect("idle").await;
    assert_eq!(ask(&mut again, "count").await, "1");
    // Both lines came before the answer; the log reader may not have read them yet.
    server
        .stderr
        .wait_for_count("the second onStart", 2, |l| l.contains("idle onStart"));
    server.stderr.wait_for_count("the second load", 2, |l| {
        l.contains("handler idle/h.js loaded on first use")
    });
    assert_eq!(server.stderr.count(|l| l.contains("idle onStart")), 2);
    assert_eq!(server.stderr.count(|l| l.contains("held onStop")), 0);
}

#[test]
fn unload_idle_needs_lazy_loading() {
    let ws = Workspace::new();
    let output = std::process::Command::new(binary())
        .args(["serve", "--unload-idle", "5", "--listen", "127.0.0.1:0"])
        .arg(ws.path())
        .output()
        .expect("run switchboard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--unload-idle needs --load lazy"),
        "{stderr}"
    );
}
