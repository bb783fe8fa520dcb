//! The runtime core over real sockets: descriptors, handlers in both module styles, replies,
//! event context, state, ordering, parallel isolates, errors.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn lists_scanned_endpoints_and_refuses_unknown_ones_with_404() {
    let ws = Workspace::new();
    ws.endpoint("alpha", "one", "alpha/h")
        .write("alpha/h.js", "exports.onMessage = (m) => m;")
        .write(
            "beta/deep/er/two.websocket",
            r#"{"handler": "alpha/h.js", "endpoint": "two", "description": "second"}"#,
        );
    let server = Server::start(ws.path());
    let out = server.stdout.text();
    assert!(out.contains("endpoint one"), "{out}");
    assert!(
        out.contains("descriptor beta/deep/er/two.websocket  handler alpha/h.js"),
        "{out}"
    );

    let list = server.get("/websockets/v4/service").await;
    assert_eq!(list.status, 200);
    let list: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(list[1]["description"], "second");
    assert_eq!(list[1]["handler"], "alpha/h.js");
    assert_eq!(list[1]["project"], "beta");

    let missing = server.get("/websockets/v4/service/nope").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("no WebSocket endpoint \"nope\""),
        "{}",
        missing.body
    );
    match tokio_tungstenite::connect_async(server.ws_url("nope")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    // Both of Dirigible's paths upgrade.
    let mut client = connect(&format!("ws://{}/websockets/service/two", server.address)).await;
    assert_eq!(
        ask(&mut client, "via the short path").await,
        "via the short path"
    );

    let index = server.get("/").await;
    assert_eq!(index.status, 200);
    assert!(
        index.body.contains("/websockets/v4/service/one"),
        "{}",
        index.body
    );
    assert!(
        index.body.contains("href=\"/services/web/beta/\""),
        "{}",
        index.body
    );
}

#[tokio::test]
async fn commonjs_handlers_with_require() {
    let ws = Workspace::new();
    ws.endpoint("p", "cjs", "p/handler")
        .write(
            "p/handler.js",
            r#"
            const websockets = require("net/websockets");
            const { websockets: viaSdk } = require("sdk/net");
            const v4 = require("net/v4/websockets");
            const greet = require("./lib/greet");
            const shared = require("p/lib/greet.js");
            const data = require("./data.json");
            module.exports = {
              onMessage(message) {
                return [greet(message), websockets === viaSdk && websockets === v4, shared === greet, data.answer].join("|");
              },
            };
            "#,
        )
        .write("p/lib/greet.js", "module.exports = (name) => `hello ${name}`;")
        .write("p/data.json", r#"{"answer": 42}"#);
    let server = Server::start(ws.path());
    let mut client = server.connect("cjs").await;
    assert_eq!(ask(&mut client, "cjs").await, "hello cjs|true|true|42");
}

#[tokio::test]
async fn es_module_handlers_with_imports() {
    let ws = Workspace::new();
    ws.endpoint("p", "esm", "p/handler")
        .write(
            "p/handler.mjs",
            r#"
            import { websockets } from "sdk/net";
            import ws from "net/websockets";
            import { shout } from "./lib/shout.mjs";
            import legacy from "./legacy.js";
            export function onMessage(message) {
              return `${shout(message)} ${websockets === ws} ${legacy.kind}`;
            }
            "#,
        )
        .write(
            "p/lib/shout.mjs",
            "export const shout = (s) => s.toUpperCase();",
        )
        .write("p/legacy.js", "exports.kind = 'commonjs';");
    let server = Server::start(ws.path());
    let mut client = server.connect("esm").await;
    assert_eq!(ask(&mut client, "esm").await, "ESM true commonjs");
}

/// Temporal is loaded into an isolate on first use (the engine's polyfill is large); the
/// runtime's own scripts are cached without their source text, a handler's never is.
#[tokio::test]
async fn temporal_loads_on_first_use_and_handler_functions_keep_their_source() {
    let ws = Workspace::new();
    ws.endpoint("p", "cjs", "p/cjs")
        .write(
            "p/cjs.js",
            r#"
            function marker() { return "kept source"; }
            module.exports = {
              onMessage() {
                return [
                  typeof Temporal,
                  Temporal.PlainDate.from("2026-12-03").add({ days: 1 }).toString(),
                  new Date(0).toTemporalInstant().epochMilliseconds,
                  marker.toString().includes("kept source"),
                ].join("|");
              },
            };
            "#,
        )
        .endpoint("p", "esm", "p/esm")
        .write(
            "p/esm.mjs",
            r#"
            globalThis.Temporal = "replaced";
            export function onMessage() {
              return [Temporal, typeof Date.prototype.toTemporalInstant,
                onMessage.toString().includes("replaced")].join("|");
            }
            "#,
        );
    let server = Server::start(ws.path());
    let mut cjs = server.connect("cjs").await;
    assert_eq!(ask(&mut cjs, "now").await, "object|2026-12-04|0|true");
    let mut esm = server.connect("esm").await;
    assert_eq!(ask(&mut esm, "now").await, "replaced|function|true");
}

#[tokio::test]
async fn replies_by_return_value_and_conn_send() {
    let ws = Workspace::new();
    ws.endpoint("p", "reply", "p/h").write(
        "p/h.js",
        r#"
        exports.onOpen = (conn) => conn.send(`welcome ${conn.endpoint} ${typeof conn.id}`);
        exports.onMessage = async function (message, conn) {
          switch (message) {
            case "string": return "a string";
            case "object": return { a: 1, list: [true, null] };
            case "number": return 7;
            case "bytes": return new Uint8Array([1, 2, 3]);
            case "buffer": return new Uint8Array([9, 8]).buffer;
            case "nothing": conn.send("sent, no reply"); return undefined;
            case "async": return await new Promise((resolve) => setTimeout(() => resolve("later"), 5));
          }
        };
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("reply").await;
    assert_eq!(next_text(&mut client).await, "welcome reply number");
    assert_eq!(ask(&mut client, "string").await, "a string");
    assert_eq!(
        ask(&mut client, "object").await,
        r#"{"a":1,"list":[true,null]}"#
    );
    assert_eq!(ask(&mut client, "number").await, "7");
    send_text(&mut client, "bytes").await;
    assert_eq!(
        next_message(&mut client).await,
        Message::binary(vec![1, 2, 3])
    );
    send_text(&mut client, "buffer").await;
    assert_eq!(next_message(&mut client).await, Message::binary(vec![9, 8]));
    assert_eq!(ask(&mut client, "nothing").await, "sent, no reply");
    assert_eq!(ask(&mut client, "async").await, "later");
}

/// The handler's sends are written to the socket at once when it can take them; a message larger
/// than the socket's send buffer (4 MiB at most on Linux) is taken only in part, and the rest
/// must still arrive whole, before anything sent after it.
#[tokio::test]
async fn a_message_larger_than_the_socket_buffer_arrives_whole_and_before_later_ones() {
    let ws = Workspace::new();
    ws.endpoint("p", "big", "p/h").write(
        "p/h.js",
        r#"
        exports.onMessage = (m, conn) => {
          const size = Number(m);
          conn.send("x".repeat(size));
          conn.send(new Uint8Array(size).fill(7));
          for (let i = 0; i < 50; i++) conn.send(`after ${i}`);
          return "done";
        };
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("big").await;
    let size = 8 << 20;
    send_text(&mut client, &size.to_string()).await;
    let text = next_text(&mut client).await;
    assert!(
        text.len() == size && text.bytes().all(|b| b == b'x'),
        "text of {} bytes",
        text.len()
    );
    match next_message(&mut client).await {
        Message::Binary(data) => assert!(data.len() == size && data.iter().all(|&b| b == 7)),
        other => panic!("expected the binary message, got {other:?}"),
    }
    for i in 0..50 {
        assert_eq!(next_text(&mut client).await, format!("after {i}"));
    }
    assert_eq!(next_text(&mut client).await, "done");
    // Small messages still get their answers afterwards.
    assert_eq!(ask(&mut client, "3").await, "xxx");
}

#[tokio::test]
async fn binary_frames_arrive_as_uint8array_and_echo_back() {
    let ws = Workspace::new();
    ws.endpoint("p", "bin", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => (m instanceof Uint8Array ? m.map((b) => b ^ 0xff) : `text:${typeof m}`);"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("bin").await;
    let payload: Vec<u8> = (0..=255).collect();
    client.send(Message::binary(payload.clone())).await.unwrap();
    let expected: Vec<u8> = payload.iter().map(|b| b ^ 0xff).collect();
    assert_eq!(next_message(&mut client).await, Message::binary(expected));
    assert_eq!(ask(&mut client, "hi").await, "text:string");
    // Large binary messages cross intact.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    client.send(Message::binary(big.clone())).await.unwrap();
    let back: Vec<u8> = big.iter().map(|b| b ^ 0xff).collect();
    assert_eq!(next_message(&mut client).await, Message::binary(back));
}

/// A binary reply is exactly the bytes its view covers: the received array changed in place, a
/// part of it (a view at an offset), an empty one, and other views (sent as their bytes).
#[tokio::test]
async fn a_binary_reply_is_the_bytes_its_view_covers() {
    let ws = Workspace::new();
    ws.endpoint("p", "views", "p/h").write(
        "p/h.js",
        r#"
        exports.onMessage = (m) => {
          switch (m[0]) {
            case 1: m[1] = 42; return m;
            case 2: return m.subarray(2, 5);
            case 3: return m.subarray(1, 1);
            case 4: return new Int16Array([1, 2]);
            default: return new DataView(m.buffer, 1, 2);
          }
        };
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("views").await;
    let cases: [(&[u8], &[u8]); 5] = [
        (&[1, 0, 7], &[1, 42, 7]),
        (&[2, 10, 11, 12, 13, 14], &[11, 12, 13]),
        (&[3, 9], &[]),
        (&[4], &[1, 0, 2, 0]),
        (&[5, 6, 7, 8], &[6, 7]),
    ];
    for (sent, expected) in cases {
        client.send(Message::binary(sent.to_vec())).await.unwrap();
        assert_eq!(
            next_message(&mut client).await,
            Message::binary(expected.to_vec()),
            "reply to {sent:?}"
        );
    }
}

/// onMessage runs with the handler's exports as `this`, in both module styles; an export that
/// is a getter is read once per message (the dispatcher calls a plain export as a method).
#[tokio::test]
async fn on_message_runs_on_its_exports_and_a_getter_export_is_read_once_a_message() {
    let ws = Workspace::new();
    ws.endpoint("p", "esm-this", "p/esm")
        .write(
            "p/esm.mjs",
            r#"
            export const prefix = "esm";
            export function onMessage(m) { return `${this.prefix}:${m}`; }
            "#,
        )
        .endpoint("p", "getter", "p/getter")
        .write(
            "p/getter.js",
            r#"
            let reads = 0;
            module.exports.prefix = "cjs";
            Object.defineProperty(module.exports, "onMessage", {
              enumerable: true,
              get() {
                reads += 1;
                return function (m) { return `${this.prefix}:${m}:${reads}`; };
              },
            });
            "#,
        );
    let server = Server::start(ws.path());
    let mut esm = server.connect("esm-this").await;
    assert_eq!(ask(&mut esm, "a").await, "esm:a");
    let mut getter = server.connect("getter").await;
    let first = ask(&mut getter, "a").await;
    let reads: u32 = first.strip_prefix("cjs:a:").expect(&first).parse().unwrap();
    assert_eq!(ask(&mut getter, "b").await, format!("cjs:b:{}", reads + 1));
    assert_eq!(ask(&mut getter, "c").await, format!("cjs:c:{}", reads + 2));
}

/// Text crosses into JS and back through the engine's string conversions, which have separate
/// paths for ASCII and for wider text; a reply that is a new string takes the read-back path.
#[tokio::test]
async fn text_of_every_width_reaches_js_and_comes_back_intact() {
    let ws = Workspace::new();
    ws.endpoint("p", "text", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => `${m.length}|${[...m].length}|${m.toUpperCase()}`;"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("text").await;
    let big_ascii = "abc".repeat(6_000);
    let big_wide = format!("{}é日😀", "x".repeat(20_000));
    let cases = [
        "",
        "plain ascii",
        "latin-1: héllo wörld",
        "bmp: 日本語",
        "astral: 😀 and 𝄞",
        &big_ascii,
        &big_wide,
    ];
    for text in cases {
        let utf16_units = text.encode_utf16().count();
        let code_points = text.chars().count();
        let expected = format!("{utf16_units}|{code_points}|{}", text.to_uppercase());
        assert_eq!(ask(&mut client, text).await, expected, "for {:.40}", text);
    }
}

/// The engine's `Intl` stand-in once answered one fixed German date for every date formatted
/// long in `de-DE` (`vendor/v8x-intl-stub-dates-as-themselves.patch`): a date must format as
/// itself, whichever locale and options a handler asks for.
#[tokio::test]
async fn dates_format_as_themselves_in_every_locale() {
    let ws = Workspace::new();
    ws.endpoint("p", "date", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => {
             const date = new Date(Number(m));
             const long = { weekday: "long", year: "numeric", month: "long", day: "numeric" };
             return JSON.stringify([date.toLocaleString("de-DE", long), date.toLocaleString()]);
           };"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("date").await;
    // 1999-07-15 12:00 UTC and 2031-02-03 12:00 UTC: noon, so every time zone has the same year.
    for (millis, year) in [("932040000000", "1999"), ("1927886400000", "2031")] {
        let answer = ask(&mut client, millis).await;
        let [german, plain]: [String; 2] = serde_json::from_str(&answer).unwrap();
        assert!(german.contains(year), "{millis} formatted as {german:?}");
        // README: the stand-in ignores the locale; it says so, so this must hold.
        assert_eq!(german, plain);
    }
}

/// Case conversion: ASCII takes the engine's byte-by-byte path (vendor/README.md,
/// `v8x-quickjs-ascii-case.patch`), everything else Unicode's full mapping; both as the
/// language defines them.
#[tokio::test]
async fn case_conversion_follows_unicode_on_every_path() {
    let ws = Workspace::new();
    ws.endpoint("p", "case", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => {
             const s = JSON.parse(m);
             return JSON.stringify([s.toLowerCase(), s.toUpperCase(), s.toLowerCase() === s]);
           };"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("case").await;
    for (input, lower, upper) in [
        (
            "HeLLo, World 42! @[`{",
            "hello, world 42! @[`{",
            "HELLO, WORLD 42! @[`{",
        ),
        ("already lower", "already lower", "ALREADY LOWER"),
        ("A\0Z", "a\0z", "A\0Z"),
        ("", "", ""),
        // Latin-1, one byte a character in the engine, but not ASCII: sharp s becomes two
        // letters, y with diaeresis and micro sign leave Latin-1.
        (
            "Stra\u{df}e \u{ff} \u{b5} \u{c0}",
            "stra\u{df}e \u{ff} \u{b5} \u{e0}",
            "STRASSE \u{178} \u{39c} \u{c0}",
        ),
        // Two bytes a character: Greek's final sigma, a dotted capital I.
        (
            "\u{39f}\u{394}\u{39f}\u{3a3} \u{130}",
            "\u{3bf}\u{3b4}\u{3bf}\u{3c2} i\u{307}",
            "\u{39f}\u{394}\u{39f}\u{3a3} \u{130}",
        ),
    ] {
        let answer = ask(&mut client, &serde_json::to_string(input).unwrap()).await;
        let (got_lower, got_upper, unchanged): (String, String, bool) =
            serde_json::from_str(&answer).unwrap();
        assert_eq!(got_lower, lower, "{input:?}.toLowerCase()");
        assert_eq!(got_upper, upper, "{input:?}.toUpperCase()");
        assert_eq!(unchanged, input == lower, "{input:?}");
    }
    // Every ASCII character, at every offset within the engine's eight-byte steps, and a
    // non-ASCII letter after whole steps of ASCII (the general path from there).
    let every_ascii: String = (0u8..128).map(char::from).collect();
    for shift in 0..8 {
        for input in [
            format!("{}{every_ascii}", &"xxxxxxx"[..shift]),
            format!("{}ABCDEFGHIJKLMNOP\u{c0}Z", &"XXXXXXX"[..shift]),
        ] {
            let answer = ask(&mut client, &serde_json::to_string(&input).unwrap()).await;
            let (got_lower, got_upper, _): (String, String, bool) =
                serde_json::from_str(&answer).unwrap();
            assert_eq!(got_lower, input.to_lowercase(), "{input:?}.toLowerCase()");
            assert_eq!(got_upper, input.to_uppercase(), "{input:?}.toUpperCase()");
        }
    }
}

/// String equality, where the engine tells two distinct atoms (interned strings: literals,
/// property names, `typeof`'s answers) apart without comparing characters (vendor/README.md,
/// `v8x-quickjs-atom-string-equality.patch`): every mix of atoms and strings built at run time,
/// one byte and two bytes a character, equal and not.
#[tokio::test]
async fn strings_compare_by_contents_whether_interned_or_built() {
    let ws = Workspace::new();
    ws.endpoint("p", "eq", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m) => {
             const [word, other] = JSON.parse(m);
             const key = Object.keys({ [word]: 1 })[0];
             const built = [...word].join("");
             const kind = typeof word;
             let matched = "none";
             switch (word) {
               case "object": matched = "object"; break;
               case "string": matched = "string"; break;
               case "café": matched = "cafe"; break;
             }
             return JSON.stringify([
               kind === "string", kind === "object", typeof 1 === "number", typeof {} === "string",
               key === word, key === built, built === word, key === other, built === other,
               word === "object", word === "string", word === "café", key === "café",
               new Set(["object", "string", "café"]).has(built), matched,
             ]);
           };"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("eq").await;
    for (word, other) in [
        ("object", "string"),
        ("string", "object"),
        ("string", "string"),
        ("caf\u{e9}", "cafe"),
        ("caf\u{e9}", "caf\u{e9}"),
        ("strinG", "string"),
    ] {
        let answer = ask(&mut client, &serde_json::to_string(&(word, other)).unwrap()).await;
        let listed = ["object", "string", "caf\u{e9}"].contains(&word);
        let matched = match word {
            "object" => "object",
            "string" => "string",
            "caf\u{e9}" => "cafe",
            _ => "none",
        };
        let same = word == other;
        let expected = serde_json::json!([
            true,
            false,
            true,
            false,
            true,
            true,
            true,
            same,
            same,
            word == "object",
            word == "string",
            word == "caf\u{e9}",
            word == "caf\u{e9}",
            listed,
            matched,
        ]);
        let got: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(got, expected, "{word:?} against {other:?}");
    }
}

/// A string with a lone surrogate (half of a pair, which JavaScript strings may hold) goes out
/// with one U+FFFD in its place, as a browser's and Node's WebSocket send it; the engine's
/// UTF-8 form of it had made three.
#[tokio::test]
async fn a_lone_surrogate_is_sent_as_one_replacement_character() {
    let ws = Workspace::new();
    ws.endpoint("p", "lone", "p/h").write(
        "p/h.js",
        r#"exports.onMessage = (m, conn) => {
             const text = "a\uD800b\uDFFFc\uD83D\uDE00d" + m;
             conn.send(text);
             return text;
           };"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("lone").await;
    client.send(Message::text("\u{e9}")).await.unwrap();
    for how in ["conn.send", "the return value"] {
        let got = next_text(&mut client).await;
        assert_eq!(got, "a\u{fffd}b\u{fffd}c\u{1f600}d\u{e9}", "{how}");
    }
}

/// Reply strings are read from the engine without a copy where they are ASCII (the engine's own
/// bytes, held until sent: vendor/README.md, `v8x-string-view-borrows-ascii.patch`): literals,
/// empty strings, strings built by concatenation and slicing, and strings the handler keeps
/// and sends again go out whole, and stay whole in the handler afterwards.
#[tokio::test]
async fn reply_strings_of_every_making_go_out_whole() {
    let ws = Workspace::new();
    ws.endpoint("p", "kinds", "p/h").write(
        "p/h.js",
        r#"const kept = [];
           exports.onMessage = (m, conn) => {
             if (m === "kept") return JSON.stringify(kept);
             const made = {
               literal: "a literal",
               empty: "",
               joined: "<" + m + ">" + m.length,
               sliced: (m + m).slice(1, -1),
               repeated: m.repeat(3),
               wide: m + "\u00e9\u20ac",
               again: kept.length > 0 ? kept[kept.length - 1] : "none",
             }[m.split(":")[0]] ?? m;
             kept.push(made);
             conn.send(made);
             return made;
           };"#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("kinds").await;
    let mut sent = Vec::new();
    for (input, expected) in [
        ("literal", "a literal".to_string()),
        ("empty", String::new()),
        ("joined", "<joined>6".to_string()),
        ("sliced", "licedslice".to_string()),
        ("repeated", "repeated".repeat(3)),
        ("wide", "wide\u{e9}\u{20ac}".to_string()),
        ("again", "wide\u{e9}\u{20ac}".to_string()),
        ("plain:abc", "plain:abc".to_string()),
    ] {
        client.send(Message::text(input)).await.unwrap();
        for how in ["conn.send", "the return value"] {
            assert_eq!(next_text(&mut client).await, expected, "{input}: {how}");
        }
        sent.push(expected);
    }
    let kept: Vec<String> = serde_json::from_str(&ask(&mut client, "kept").await).unwrap();
    assert_eq!(
        kept, sent,
        "the strings the handler kept after sending them"
    );
}

#[tokio::test]
async fn event_context_functions_inside_and_outside_events() {
    let ws = Workspace::new();
    ws.endpoint("p", "ctx", "p/h").write(
        "p/h.js",
        r#"
        const ws = require("net/websockets");
        const describe = () => JSON.stringify({
          method: ws.getMethod(), message: ws.getMessage(), error: ws.getError(),
          open: ws.isOnOpen(), msg: ws.isOnMessage(), err: ws.isOnError(), close: ws.isOnClose(),
        });
        const atTopLevel = describe();
        let onOpenSeen = null;
        exports.onOpen = (conn) => { onOpenSeen = describe(); };
        exports.onMessage = (message, conn) => {
          if (message === "fail") throw new Error("asked to fail");
          if (message === "top") return atTopLevel;
          if (message === "open") return onOpenSeen;
          return describe();
        };
        exports.onError = (error, conn) => conn.send(describe());
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("ctx").await;
    let top: serde_json::Value = serde_json::from_str(&ask(&mut client, "top").await).unwrap();
    assert_eq!(
        top,
        serde_json::json!({"method": null, "message": null, "error": null, "open": false, "msg": false, "err": false, "close": false})
    );
    let open: serde_json::Value = serde_json::from_str(&ask(&mut client, "open").await).unwrap();
    assert_eq!(open["method"], "onopen");
    assert_eq!(open["open"], true);
    let message: serde_json::Value =
        serde_json::from_str(&ask(&mut client, "hello").await).unwrap();
    assert_eq!(
        message,
        serde_json::json!({"method": "onmessage", "message": "hello", "error": null, "open": false, "msg": true, "err": false, "close": false})
    );
    let error: serde_json::Value = serde_json::from_str(&ask(&mut client, "fail").await).unwrap();
    assert_eq!(error["method"], "onerror");
    assert_eq!(error["err"], true);
    // Where it was thrown: the handler's line and column.
    assert_eq!(error["error"], "Error: asked to fail (at p/h.js:11:41)");
}

#[tokio::test]
async fn module_state_persists_across_events_and_connections_and_close_is_reported() {
    let ws = Workspace::new();
    ws.endpoint("p", "state", "p/h").write(
        "p/h.js",
        r#"
        let count = 0;
        const closes = [];
        exports.onMessage = (m) => (m === "closes" ? JSON.stringify(closes) : String(++count));
        exports.onClose = (conn, event) => { closes.push([event.code, event.reason, event.wasClean]); };
        "#,
    );
    let server = Server::start(ws.path());
    let mut first = server.connect("state").await;
    assert_eq!(ask(&mut first, "x").await, "1");
    assert_eq!(ask(&mut first, "x").await, "2");
    first
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4001u16.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    // The server answers the close handshake.
    while let Some(Ok(message)) = first.next().await {
        if let Message::Close(frame) = message {
            assert_eq!(u16::from(frame.unwrap().code), 4001);
        }
    }
    let mut second = server.connect("state").await;
    assert_eq!(ask(&mut second, "x").await, "3");
    assert_eq!(ask(&mut second, "closes").await, r#"[[4001,"bye",true]]"#);
}

#[tokio::test]
async fn a_thousand_messages_keep_their_order() {
    let ws = Workspace::new();
    ws.endpoint("p", "order", "p/h").write(
        "p/h.js",
        "let n = 0; exports.onMessage = (m) => `${n++}:${m}`;",
    );
    let server = Server::start(ws.path());
    let client = server.connect("order").await;
    let (mut sink, mut stream) = client.split();
    let writer = tokio::spawn(async move {
        for i in 0..1000 {
            sink.feed(Message::text(format!("m{i}"))).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    for i in 0..1000 {
        let message = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(message, Message::text(format!("{i}:m{i}")));
    }
    let _sink = writer.await.unwrap();
}

#[tokio::test]
async fn handlers_run_in_parallel_while_one_is_slow() {
    let ws = Workspace::new();
    ws.endpoint("slow", "slow", "slow/h")
        .write(
            "slow/h.js",
            // Spins, holding its isolate's thread, far longer than the fast exchange below takes.
            r#"exports.onMessage = (m) => { const end = Date.now() + 30000; while (Date.now() < end) {} return "slow done"; };"#,
        )
        .endpoint("fast", "fast", "fast/h")
        .write("fast/h.js", "exports.onMessage = (m) => `fast ${m}`;");
    let server = Server::start(ws.path());
    let mut slow = server.connect("slow").await;
    let mut fast = server.connect("fast").await;
    send_text(&mut slow, "go").await;
    for i in 0..20 {
        assert_eq!(ask(&mut fast, &i.to_string()).await, format!("fast {i}"));
    }
    // Every fast reply came while the slow handler was still busy with its message.
    use futures_util::FutureExt;
    assert!(
        slow.next().now_or_never().is_none(),
        "the slow handler answered first"
    );
}

#[tokio::test]
async fn a_throwing_handler_keeps_the_connection_and_calls_on_error() {
    let ws = Workspace::new();
    ws.endpoint("p", "throws", "p/h").write(
        "p/h.js",
        r#"
        exports.onMessage = (m) => {
          if (m === "throw") throw new TypeError("bad input");
          if (m === "reject") return Promise.reject(new Error("async failure"));
          return `ok ${m}`;
        };
        exports.onError = (error, conn) => conn.send(`onError: ${error}`);
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("throws").await;
    assert_eq!(
        ask(&mut client, "throw").await,
        "onError: TypeError: bad input (at p/h.js:3:36)"
    );
    assert_eq!(ask(&mut client, "still here").await, "ok still here");
    assert_eq!(
        ask(&mut client, "reject").await,
        "onError: Error: async failure (at p/h.js:4:53)"
    );
    assert_eq!(ask(&mut client, "again").await, "ok again");
    let log = server
        .stderr
        .wait_for("the logged error", |l| l.contains("bad input"));
    assert!(log.contains("p/h.js"), "{log}");
    assert!(log.contains("onMessage failed"), "{log}");
}

#[tokio::test]
async fn console_output_is_logged_with_the_handler_path() {
    let ws = Workspace::new();
    ws.endpoint("p", "talk", "p/h").write(
        "p/h.js",
        r#"console.log("loaded", {a: 1}); exports.onMessage = (m) => { console.warn("got", m); return m; };"#,
    );
    let server = Server::start(ws.path());
    server.stderr.wait_for("top-level console.log", |l| {
        l.contains("loaded {\"a\":1}") && l.contains("p/h.js")
    });
    let mut client = server.connect("talk").await;
    assert_eq!(ask(&mut client, "ping").await, "ping");
    let line = server
        .stderr
        .wait_for("console.warn", |l| l.contains("got ping"));
    assert!(line.contains("WARN") && line.contains("p/h.js"), "{line}");
}

#[tokio::test]
async fn globals_users_expect_are_there() {
    let ws = Workspace::new();
    ws.endpoint("p", "globals", "p/h").write(
        "p/h.js",
        r#"
        exports.onMessage = async (m) => {
          const encoded = new TextEncoder().encode("héllo");
          const decoded = new TextDecoder().decode(encoded);
          const clone = structuredClone({ nested: [1, 2] });
          const micro = await new Promise((resolve) => queueMicrotask(() => resolve("micro")));
          const ticks = await new Promise((resolve) => {
            let n = 0;
            const id = setInterval(() => { if (++n === 3) { clearInterval(id); resolve(n); } }, 1);
          });
          const cancelled = await new Promise((resolve) => {
            const id = setTimeout(() => resolve("not cancelled"), 1);
            clearTimeout(id);
            setTimeout(() => resolve("cancelled"), 5);
          });
          return [encoded.length, decoded, clone.nested.length, micro, ticks, cancelled].join(",");
        };
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("globals").await;
    assert_eq!(ask(&mut client, "go").await, "6,héllo,2,micro,3,cancelled");
}

#[tokio::test]
async fn bad_descriptors_are_reported_while_good_ones_serve() {
    let ws = Workspace::new();
    ws.endpoint("good", "good", "good/h")
        .write("good/h.js", "exports.onMessage = (m) => `good ${m}`;")
        .write("bad/json.websocket", "{ not json")
        .write("bad/missing.websocket", r#"{"endpoint": "x"}"#)
        .write(
            "bad/nohandler.websocket",
            r#"{"handler": "bad/nothing", "endpoint": "y"}"#,
        )
        .write(
            "bad/dup.websocket",
            r#"{"handler": "good/h", "endpoint": "good"}"#,
        )
        .endpoint("broken", "broken", "broken/h")
        .write("broken/h.js", "exports.onMessage = (m) => { return m +; };");
    let server = Server::start(ws.path());
    let mut client = server.connect("good").await;
    assert_eq!(ask(&mut client, "still").await, "good still");
    for expected in [
        "bad/json.websocket: invalid JSON at line 1, column 3",
        "bad/missing.websocket: missing required field \"handler\"",
        "bad/nohandler.websocket: handler \"bad/nothing\" not found",
        "duplicate endpoint \"good\": already defined by",
        "broken/h.js",
    ] {
        server.stderr.wait_for(expected, |l| l.contains(expected));
    }
    // The endpoint whose handler does not load refuses upgrades with the reason.
    let refused = server.get("/websockets/v4/service/broken").await;
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(refused.body.contains("broken/h.js"), "{}", refused.body);
    let index = server.get("/").await;
    assert!(
        index.body.contains("bad/json.websocket: invalid JSON"),
        "{}",
        index.body
    );
}

#[tokio::test]
async fn project_static_files_are_served_and_confined() {
    let ws = Workspace::new();
    ws.write("site/index.html", "<h1>home</h1>")
        .write("site/js/app.js", "console.log(1)")
        .write("other/secret.txt", "secret");
    let server = Server::start(ws.path());
    let page = server.get("/services/web/site/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "<h1>home</h1>");
    assert!(
        page.headers
            .to_lowercase()
            .contains("content-type: text/html"),
        "{}",
        page.headers
    );
    let script = server.get("/services/web/site/js/app.js").await;
    assert_eq!(script.status, 200);
    assert!(
        script.headers.to_lowercase().contains("javascript"),
        "{}",
        script.headers
    );
    for escape in [
        "/services/web/site/../other/secret.txt",
        "/services/web/site/%2e%2e/other/secret.txt",
        "/services/web/site/..%2fother/secret.txt",
        "/services/web/..%2fother/secret.txt",
    ] {
        let response = server.get(escape).await;
        assert_ne!(response.status, 200, "{escape} served: {}", response.body);
        assert!(
            !response.body.contains("secret\n") && response.body != "secret",
            "{escape}"
        );
    }
    assert_eq!(server.get("/services/web/site/nope.html").await.status, 404);
}

#[tokio::test]
async fn the_sample_projects_work() {
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    let server = Server::start(&projects);
    let mut echo = server.connect("echo").await;
    assert_eq!(ask(&mut echo, "hello").await, "hello");
    echo.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        next_message(&mut echo).await,
        Message::binary(vec![0u8, 1, 2])
    );

    // Dirigible's documented handler: logs, no reply.
    let mut mine = server.connect("my-endpoint").await;
    send_text(&mut mine, "hello").await;
    server.stderr.wait_for("the documented handler's log", |l| {
        l.contains("Message received: hello")
    });
    drop(mine);

    let mut alice = server.connect("chat").await;
    let joined: serde_json::Value = serde_json::from_str(&next_text(&mut alice).await).unwrap();
    assert_eq!(joined["type"], "joined");
    let mut bob = server.connect("chat").await;
    let _bob_joined_seen_by_bob = next_text(&mut bob).await;
    let _bob_joined_seen_by_alice = next_text(&mut alice).await;
    send_text(&mut alice, "hi bob").await;
    for client in [&mut alice, &mut bob] {
        let event: serde_json::Value = serde_json::from_str(&next_text(client).await).unwrap();
        assert_eq!(event["type"], "message");
        assert_eq!(event["text"], "hi bob");
    }
}

#[tokio::test]
async fn a_handler_closes_with_a_code_and_reason_and_bad_codes_are_range_errors() {
    let ws = Workspace::new();
    ws.endpoint("p", "closer", "p/h").write(
        "p/h.js",
        r#"
        exports.onMessage = (m, conn) => {
          if (m === "bad code") conn.close(1001, "no");
          if (m === "long reason") conn.close(4000, "x".repeat(124));
          if (m === "bye") conn.close(4321, "done here");
          return `still open after ${m}`;
        };
        exports.onError = (error, conn) => conn.send(`onError: ${error}`);
        "#,
    );
    let server = Server::start(ws.path());
    let mut client = server.connect("closer").await;
    assert_eq!(
        ask(&mut client, "bad code").await,
        "onError: RangeError: close: code must be 1000 or 3000-4999, got 1001 (at p/h.js:3:38)"
    );
    assert_eq!(
        ask(&mut client, "long reason").await,
        "onError: RangeError: close: reason must be at most 123 bytes of UTF-8, got 124 (at p/h.js:4:41)"
    );
    // The close is queued before the return value, so nothing follows the close frame.
    send_text(&mut client, "bye").await;
    expect_close(&mut client, 4321, "done here").await;
}
