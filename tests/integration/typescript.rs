//! Today's Dirigible projects: TypeScript handlers, endpoints declared with `@Websocket` in
//! `*Websocket.ts` files, the `Websockets` SDK class, and the type declarations editors use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::browser::{Browser, Page, WAIT_FOR};
use crate::support::*;

/// Dirigible's documented decorator sample (`OrderWebsocket.ts`), as a user copies it.
const ORDER_WEBSOCKET: &str = r#"import { Websocket } from "@aerokit/sdk/net";

@Websocket({
    name: "sample-websocket-decorator/OrderWebsocket",
    endpoint: "order-ws"
})
export class OrderWebsocket {

    public static onOpen() {
        console.log("Connected to the order websocket");
    }

    public static onMessage(message: string, from: string) {
        console.log(`Message received: ${message}, from: ${from}`);
        return `Hello from OrderWebsocket! [${message}]`;
    }

    public static onError(error: string) {
        console.error(`Error: ${error}`);
    }

    public static onClose() {
        console.log("Disconnected from the order websocket");
    }
}

export function onOpen() {
    OrderWebsocket.onOpen();
}

export function onMessage(message: string, from: string) {
    return OrderWebsocket.onMessage(message, from);
}

export function onError(error: string) {
    OrderWebsocket.onError(error);
}

export function onClose() {
    OrderWebsocket.onClose();
}
"#;

/// The endpoint `name` in the `GET /websockets/v4/service` listing.
async fn listed(server: &Server, name: &str) -> Value {
    let listing: Value =
        serde_json::from_str(&server.get("/websockets/v4/service").await.body).unwrap();
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not listed: {listing}"))
}

#[tokio::test]
async fn dirigibles_decorator_sample_serves_without_a_descriptor() {
    let ws = Workspace::new();
    ws.write(
        "sample-websocket-decorator/OrderWebsocket.ts",
        ORDER_WEBSOCKET,
    );
    let server = Server::start(ws.path());
    server.stdout.wait_for("the endpoint's line", |l| {
        l.contains("order-ws")
            && l.contains("@Websocket in sample-websocket-decorator/OrderWebsocket.ts")
    });
    let mut client = server.connect("order-ws").await;
    assert_eq!(
        ask(&mut client, "A test message").await,
        "Hello from OrderWebsocket! [A test message]"
    );
    server.stderr.wait_for("the handler's log line", |l| {
        l.contains("sample-websocket-decorator/OrderWebsocket.ts: Message received: A test message, from: connection ")
    });
    let endpoint = listed(&server, "order-ws").await;
    assert_eq!(
        endpoint["handler"],
        "sample-websocket-decorator/OrderWebsocket.ts"
    );
    assert_eq!(
        endpoint["descriptor"],
        "sample-websocket-decorator/OrderWebsocket.ts"
    );
    assert_eq!(
        endpoint["description"],
        "sample-websocket-decorator/OrderWebsocket"
    );
}

#[tokio::test]
async fn a_typescript_handler_with_types_enums_decorators_and_the_sdk() {
    let ws = Workspace::new();
    ws.endpoint("p", "typed", "p/handler")
        .write(
            "p/model.ts",
            r#"export enum Kind { Greeting = "greeting", Order = "order" }
export interface Named { readonly name: string }
export type Reply<T> = { kind: Kind; value: T };
export class Box<T> {
  constructor(private readonly value: T) {}
  get(): T { return this.value; }
}
"#,
        )
        .write(
            "p/legacy.cts",
            "const prefix: string = 'cts';\nmodule.exports = { tag: (s: string): string => `${prefix}:${s}` };\n",
        )
        .write(
            "p/helper.mts",
            "export function shout<T extends string>(s: T): string { return s.toUpperCase(); }\n",
        )
        .write(
            "p/handler.ts",
            r#"import type { Named, Reply } from "./model.ts";
import { Box, Kind } from "./model";
import { type Connection, Websockets, websockets, Websocket, decorators } from "@aerokit/sdk/net";
import * as classic from "net/websockets";
import { shout } from "./helper.mts";
import legacy from "./legacy.cts";

// A method decorator (TC39): counts the calls of the method it decorates.
let calls = 0;
function counted<This, Args extends unknown[], R>(
  method: (this: This, ...args: Args) => R,
  _context: ClassMethodDecoratorContext<This, (this: This, ...args: Args) => R>,
) {
  return function (this: This, ...args: Args): R { calls++; return method.apply(this, args); };
}

// An accessor decorator (TC39): what it reads gets an exclamation mark.
function exclaimed<This>(
  target: ClassAccessorDecoratorTarget<This, string>,
  _context: ClassAccessorDecoratorContext<This, string>,
): ClassAccessorDecoratorResult<This, string> {
  return { get(this: This) { return `${target.get.call(this)}!`; }, set(this: This, v: string) { target.set.call(this, v); } };
}

@Websocket({ name: "not a *websocket.ts file: records only", endpoint: "metadata-only" })
class Greeter implements Named {
  readonly name = "greeter";
  #secret = 42;
  @counted
  greet(who: string): Reply<string> { return { kind: Kind.Greeting, value: `hello ${who} ${this.#secret}` }; }
  @exclaimed accessor mood = "fine";
}

const facts = (): Record<string, unknown> => ({
  statics: ["createWebsocket", "getClients", "getClient", "getClientByHandler", "getMessage", "getError",
    "getMethod", "isOnOpen", "isOnMessage", "isOnError", "isOnClose"].filter((n) => typeof (Websockets as any)[n] !== "function"),
  same: websockets === Websockets && decorators.Websocket === Websocket && classic.default === Websockets,
  metadata: (Greeter as any)[Symbol.for("websocket:metadata")],
  newThrows: (() => { try { new (Websockets as any)(); return false; } catch (e) { return String(e); } })(),
});

export function onMessage(message: string, conn: Connection): string {
  if (message === "method") return `${Websockets.getMethod()} ${classic.getMethod()} ${Websockets.isOnMessage()}`;
  if (message === "facts") return JSON.stringify(facts());
  const greeter = new Greeter();
  const reply = greeter.greet(message);
  return `${reply.kind}: ${reply.value}; ${shout(greeter.mood)} ${legacy.tag(new Box(conn.endpoint).get())} calls=${calls}`;
}
"#,
        );
    let (code, out) = run_check(ws.path());
    assert_eq!(code, 0, "{out}");
    let server = Server::start(ws.path());
    let mut client = server.connect("typed").await;
    assert_eq!(ask(&mut client, "method").await, "onmessage onmessage true");
    assert_eq!(
        ask(&mut client, "you").await,
        "greeting: hello you 42; FINE! cts:typed calls=1"
    );
    let facts: Value = serde_json::from_str(&ask(&mut client, "facts").await).unwrap();
    assert_eq!(facts["statics"], serde_json::json!([]), "{facts}");
    assert_eq!(facts["same"], true, "{facts}");
    assert_eq!(
        facts["metadata"],
        serde_json::json!({"name": "not a *websocket.ts file: records only", "endpoint": "metadata-only"})
    );
    assert!(
        facts["newThrows"]
            .as_str()
            .unwrap()
            .starts_with("TypeError: Websockets is a class of static methods"),
        "{facts}"
    );
    // Only *websocket.ts files declare endpoints.
    assert_eq!(
        server
            .get("/websockets/v4/service/metadata-only")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn classic_require_keeps_working_and_requires_typescript() {
    let ws = Workspace::new();
    ws.endpoint("p", "classic", "p/h").write(
        "p/h.js",
        r#"const websockets = require("net/websockets");
const { Websockets, websockets: same } = require("@aerokit/sdk/net");
const { label } = require("./label.ts");
exports.onMessage = () => label(`${websockets.getMethod()} ${typeof websockets.createWebsocket} ${same === Websockets && Websockets === websockets}`);"#,
    )
    .write(
        "p/label.ts",
        // TypeScript written as CommonJS (one with import/export is an ES module: import it).
        "function label(text: string): string { return `[${text}]`; }\nmodule.exports = { label };\n",
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("classic").await;
    assert_eq!(ask(&mut client, "x").await, "[onmessage function true]");
}

#[tokio::test]
async fn errors_in_typescript_name_the_typescript_line_and_column() {
    let ws = Workspace::new();
    // Types and an interface above the throw: the JavaScript's lines differ from these.
    ws.endpoint("p", "throws", "p/throws").write(
        "p/throws.ts",
        r#"interface Order {
  item: string;
  quantity: number;
}

type Maybe<T> = T | undefined;

function check(order: Maybe<Order>): Order {
  if (order === undefined) {
    throw new RangeError("no order in the message");
  }
  return order;
}

export function onMessage(message: string): string {
  const order: Maybe<Order> = message === "" ? undefined : { item: message, quantity: 1 };
  return check(order).item;
}

export function onError(error: string, conn: { send(text: string): void }): void {
  conn.send(`onError: ${error}`);
}
"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("throws").await;
    assert_eq!(ask(&mut client, "tea").await, "tea");
    assert_eq!(
        ask(&mut client, "").await,
        "onError: RangeError: no order in the message (at p/throws.ts:10:11)"
    );
    server.stderr.wait_for("the logged stack", |l| {
        l.contains("p/throws.ts: onMessage failed on connection")
    });
    server.stderr.wait_for("the stack's frames", |l| {
        l.trim() == "at check (p/throws.ts:10:11)"
    });
    server.stderr.wait_for("the caller's frame", |l| {
        l.trim() == "at Module.onMessage (p/throws.ts:17:10)"
    });
}

#[tokio::test]
async fn typescript_syntax_errors_and_throwing_top_levels_fail_check_and_answer_500() {
    let ws = Workspace::new();
    ws.endpoint("p", "syntax", "p/syntax")
        .write(
            "p/syntax.ts",
            "interface A { x: number }\n\nexport function onMessage(m: string): string {\n  const a: A = { x: };\n  return m;\n}\n",
        )
        .endpoint("p", "top", "p/top")
        .write(
            "p/top.ts",
            "type Config = { port: number };\n\nconst config: Config | null = null;\nif (config === null) throw new Error(\"no config\");\nexport const onMessage = (m: string) => m;\n",
        )
        .endpoint("p", "imports", "p/imports")
        .write(
            "p/imports.ts",
            "import { value } from \"./broken.ts\";\nexport const onMessage = () => value;\n",
        )
        .write("p/broken.ts", "export const value: number = 1 +;\n")
        // Dirigible writes these fields itself: no warning.
        .write(
            "p/dirigible.websocket",
            r#"{"handler": "p/ok.ts", "endpoint": "ok", "location": "/p/dirigible.websocket", "createdBy": "admin", "createdAt": 1733131200000}"#,
        )
        .write("p/ok.ts", "export const onMessage = (m: string): string => m;\n")
        // A decorator and a descriptor claiming one endpoint: a duplicate naming both files.
        .write(
            "q/DupWebsocket.ts",
            "import { Websocket } from \"@aerokit/sdk/net\";\n@Websocket({ name: \"dup\", endpoint: \"ok\" })\nexport class Dup {}\nexport const onMessage = () => \"dup\";\n",
        )
        .write(
            "q/BadWebsocket.ts",
            "import { Websocket } from \"@aerokit/sdk/net\";\nconst computed = \"computed\";\n@Websocket({ name: \"bad\", endpoint: computed })\nexport class Bad {}\n",
        )
        .write(
            "q/PlainWebsocket.ts",
            "// A *Websocket.ts module without the decorator is just a module.\nexport const helper = 1;\n",
        );
    let (code, out) = run_check(ws.path());
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    for expected in [
        "p/syntax.ts:4:21: SyntaxError: Expression expected",
        "p/top.ts:4:28: Error: no config",
        "p/broken.ts:1:33: SyntaxError: Expression expected",
        "q/DupWebsocket.ts: duplicate endpoint \"ok\": already defined by p/dirigible.websocket; this @Websocket declaration is skipped",
        "q/BadWebsocket.ts:3:1: @Websocket on class Bad: \"endpoint\" must be a string literal (the workspace scan reads it without running the code)",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("warning"), "{out}");
    assert!(!out.contains("PlainWebsocket"), "{out}");
    let summary = format!("4 endpoint(s), 5 problem(s) in {}\n", ws.path().display());
    assert!(out.ends_with(&summary), "{out}");

    let server = Server::start(ws.path());
    let refused = server.get("/websockets/v4/service/syntax").await;
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("p/syntax.ts:4:21: SyntaxError: Expression expected"),
        "{}",
        refused.body
    );
    let mut ok = server.connect("ok").await;
    assert_eq!(ask(&mut ok, "fine").await, "fine");
}

#[tokio::test]
async fn typescript_edits_reload_and_the_decorator_binds_and_unbinds() {
    let ws = Workspace::new();
    let declared = |reply: &str, decorated: bool| {
        format!(
            "import {{ Websocket }} from \"@aerokit/sdk/net\";\n{}export class Live {{}}\nexport const onMessage = (m: string): string => `{reply} ${{m}}`;\n",
            if decorated { "@Websocket({ name: \"live\", endpoint: \"live-ws\" })\n" } else { "" }
        )
    };
    ws.write("p/LiveWebsocket.ts", &declared("v1", true));
    let server = Server::start(ws.path());
    let mut client = server.connect("live-ws").await;
    assert_eq!(ask(&mut client, "a").await, "v1 a");

    ws.write("p/LiveWebsocket.ts", &declared("v2", true));
    server.stderr.wait_for(
        "the reload",
        reloaded("handler p/LiveWebsocket.ts reloaded"),
    );
    assert_eq!(ask(&mut client, "b").await, "v2 b");

    // A typo keeps the endpoint and the last good code.
    ws.write(
        "p/LiveWebsocket.ts",
        &declared("v3", true).replace("(m: string)", "(m: string"),
    );
    server
        .stderr
        .wait_for("the failed reload", reloaded("NOT reloaded"));
    assert_eq!(ask(&mut client, "c").await, "v2 c");

    ws.write("p/LiveWebsocket.ts", &declared("v4", false));
    expect_close(&mut client, 1001, "endpoint live-ws removed").await;
    server
        .stderr
        .wait_for("the unbinding", reloaded("endpoint live-ws removed"));
    assert_eq!(
        server.get("/websockets/v4/service/live-ws").await.status,
        404
    );

    ws.write("p/LiveWebsocket.ts", &declared("v5", true));
    server
        .stderr
        .wait_for("the binding", reloaded("endpoint live-ws bound"));
    let mut again = server.connect("live-ws").await;
    assert_eq!(ask(&mut again, "d").await, "v5 d");
}

/// The repository's folder.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The TypeScript compiler the test set-up installs (scripts/setup.sh --test).
fn tsc() -> PathBuf {
    let tsc = repository().join("tests/node/node_modules/.bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: scripts/setup.sh --test installs the tests' Node packages",
        tsc.display()
    );
    tsc
}

/// `tsc --noEmit` in `project`: (success, output).
pub fn type_check(project: &Path) -> (bool, String) {
    let output = Command::new(tsc())
        .args(["--noEmit", "-p"])
        .arg(project)
        .output()
        .expect("run tsc");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_type_declarations_check_handlers_in_an_editor() {
    // The sample project's copy is what `switchboard types` writes.
    let sample = repository().join("projects/orders");
    let shipped = std::fs::read_to_string(sample.join("switchboard.d.ts")).unwrap();
    let project = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .arg("types")
        .arg(project.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let written = std::fs::read_to_string(project.path().join("switchboard.d.ts")).unwrap();
    assert_eq!(
        written, shipped,
        "projects/orders/switchboard.d.ts is stale: run switchboard types projects/orders"
    );
    let (ok, out) = type_check(&sample);
    assert!(ok, "the sample project does not type-check:\n{out}");

    // A correct handler written every way the API allows type-checks...
    std::fs::write(
        project.path().join("GoodWebsocket.ts"),
        r#"import { Websocket, Websockets, websockets, decorators, type OnMessage, type WebsocketHandler } from "@aerokit/sdk/net";
import classic, { getMethod } from "net/websockets";
@Websocket({ name: "good", endpoint: "good" })
export class Good {}
@decorators.Websocket({ name: "also", endpoint: "also" })
export class Also {}
export const onMessage: OnMessage = (message, conn) => {
  conn.send(typeof message === "string" ? message : message.length);
  const client = Websockets.createWebsocket("ws://127.0.0.1:1/", "p/h", { dataType: "object" });
  client.close(1000, "bye");
  return `${Websockets.getMethod()} ${websockets.getClients().length} ${getMethod()} ${classic.isOnOpen()}`;
};
export const onClose: WebsocketHandler["onClose"] = (conn, { code, reason }) => console.log(conn.id, code, reason);
setTimeout(() => console.log(new TextDecoder().decode(new TextEncoder().encode("x"))), 1);
"#,
    )
    .unwrap();
    let (ok, out) = type_check(project.path());
    assert!(ok, "a correct handler does not type-check:\n{out}");

    // ...and mistakes are caught where they are.
    std::fs::write(
        project.path().join("BadWebsocket.ts"),
        r#"import { Websocket, Websockets, type OnMessage } from "@aerokit/sdk/net";
@Websocket({ name: "bad" })
export class Bad {}
export const onMessage: OnMessage = (message: number) => `${message}`;
Websockets.getMethods();
"#,
    )
    .unwrap();
    let (ok, out) = type_check(project.path());
    assert!(!ok, "mistakes pass the type check:\n{out}");
    for place in [
        "BadWebsocket.ts(2,",
        "BadWebsocket.ts(4,",
        "BadWebsocket.ts(5,",
    ] {
        assert!(out.contains(place), "no error at {place}:\n{out}");
    }
}

#[tokio::test]
async fn the_typescript_sample_page_in_headless_chromium() {
    let projects = repository().join("projects");
    let server = Server::start(&projects);
    let browser = Browser::launch();
    let mut page = Page::open(&browser).await;
    page.goto(&format!("http://{}/services/web/orders/", server.address))
        .await;
    let log = page
        .eval(&format!(
            r#"(async () => {{
              {WAIT_FOR}
              document.getElementById("from").value = "Test user";
              document.getElementById("connectBtn").click();
              await waitFor("the socket to open", () => document.getElementById("status").textContent === "connected");
              document.getElementById("text").value = "A test message";
              document.getElementById("sendMessage").click();
              await waitFor("the greeting", () => document.getElementById("log").textContent.includes("Hello from OrderWebsocket!"));
              document.getElementById("text").value = '{{"item": "tea", "quantity": 2, "priority": "rush"}}';
              document.getElementById("sendMessage").click();
              await waitFor("the order", () => document.getElementById("log").textContent.includes("x tea"));
              return document.getElementById("log").innerText;
            }})()"#
        ))
        .await;
    let log = log.as_str().unwrap();
    assert!(
        log.contains("Test user: Hello from OrderWebsocket! [A test message]"),
        "{log}"
    );
    assert!(log.contains("Test user: order #2: 2 x tea (rush)"), "{log}");
}

#[tokio::test]
async fn a_decorator_gives_a_descriptor_s_endpoint_options() {
    let ws = Workspace::new();
    ws.write(
        "t/LimitsWebsocket.ts",
        r#"import { Websocket } from "@aerokit/sdk/net";
@Websocket({
  name: "limits",
  endpoint: "limited-ts",
  maxMessageSize: 16,
  allowedOrigins: ["https://app.example"],
  service: { interval: "1s" },
})
export class Limits {}
export const onMessage = (m: string): string => m;
export function onTick(): void { console.log("limited tick"); }
"#,
    );
    let server = Server::start(ws.path());
    let url = server.ws_url("limited-ts");
    // allowedOrigins: another origin is refused, the listed one served.
    let (status, _) = connect_with(&url, &[("Origin", "https://evil.example")])
        .await
        .expect_err("an origin outside allowedOrigins is refused");
    assert_eq!(status, 403);
    let mut client = connect_with(&url, &[("Origin", "https://app.example")])
        .await
        .expect("the allowed origin connects");
    assert_eq!(ask(&mut client, "short").await, "short");
    // maxMessageSize: a longer message closes the connection with 1009.
    send_text(&mut client, "longer than sixteen bytes").await;
    expect_close(&mut client, 1009, "message too big").await;
    // service: onTick runs.
    server
        .stderr
        .wait_for("the service's tick", |l| l.contains("limited tick"));

    // Options the scan cannot read, or a descriptor would refuse, name the file, line and
    // column, as a descriptor's errors name its field.
    let bad = Workspace::new();
    bad.write(
        "t/ExprWebsocket.ts",
        "import { Websocket } from \"@aerokit/sdk/net\";\n@Websocket({ name: \"e\", endpoint: \"expr\", maxMessageSize: 64 * 1024 })\nexport class E {}\n",
    )
    .write(
        "t/RangeWebsocket.ts",
        "import { Websocket } from \"@aerokit/sdk/net\";\n\n@Websocket({ name: \"r\", endpoint: \"range\", compression: \"fast\" })\nexport class R {}\n",
    );
    let (code, out) = run_check(bad.path());
    assert_eq!(code, 1, "{out}");
    for expected in [
        "t/ExprWebsocket.ts:2:1: @Websocket on class E: \"maxMessageSize\" must be a literal: a number, a string, or an array or object of them (the workspace scan reads it without running the code)",
        "t/RangeWebsocket.ts:3:1: @Websocket on class R: field \"compression\": unknown compression \"fast\": use \"off\", \"shared\" or \"dedicated\"",
    ] {
        assert!(out.lines().any(|l| l == expected), "missing {expected:?} in:\n{out}");
    }
}
