//! `switchboard check`: each kind of bad descriptor and handler, with its exact message.

use crate::support::*;

#[test]
fn check_reports_every_kind_of_problem_exactly() {
    let ws = Workspace::new();
    ws.write("good/h.js", "exports.onMessage = (m) => m;")
        .write(
            "good/good.websocket",
            r#"{"handler": "good/h", "endpoint": "good"}"#,
        )
        .write(
            "good/warn.websocket",
            r#"{"handler": "good/h", "endpoint": "w", "colour": "red", "engine": "graalvm"}"#,
        )
        .write("bad/json.websocket", "{ \"handler\": ")
        .write("bad/array.websocket", "[1]")
        .write("bad/nohandler.websocket", r#"{"endpoint": "a"}"#)
        .write("bad/noendpoint.websocket", r#"{"handler": "good/h"}"#)
        .write("bad/number.websocket", r#"{"handler": 3, "endpoint": "n"}"#)
        .write(
            "bad/badname.websocket",
            r#"{"handler": "good/h", "endpoint": "a b"}"#,
        )
        .write(
            "bad/missing.websocket",
            r#"{"handler": "bad/missing", "endpoint": "m"}"#,
        )
        .write(
            "bad/escape.websocket",
            r#"{"handler": "../etc/passwd", "endpoint": "e1"}"#,
        )
        .write(
            "bad/abs.websocket",
            r#"{"handler": "/etc/passwd", "endpoint": "e2"}"#,
        )
        .write(
            "zz/dup.websocket",
            r#"{"handler": "good/h", "endpoint": "good"}"#,
        )
        .write(
            "bad/syntax.js",
            "exports.onMessage = function (m) {\n  return m +;\n};\n",
        )
        .write(
            "bad/syntax.websocket",
            r#"{"handler": "bad/syntax", "endpoint": "syn"}"#,
        )
        .write(
            "bad/esyntax.mjs",
            "export function onMessage(m) {\n\n  return m +;\n}\n",
        )
        .write(
            "bad/esyntax.websocket",
            r#"{"handler": "bad/esyntax", "endpoint": "esyn"}"#,
        )
        .write(
            "bad/import.mjs",
            "import { x } from \"./nope.mjs\";\nexport const a = x;\n",
        )
        .write(
            "bad/import.websocket",
            r#"{"handler": "bad/import", "endpoint": "imp"}"#,
        )
        .write(
            "bad/remote.mjs",
            "import x from \"https://example.com/x.js\";\n",
        )
        .write(
            "bad/remote.websocket",
            r#"{"handler": "bad/remote", "endpoint": "rem"}"#,
        )
        .write(
            "stray.websocket",
            r#"{"handler": "good/h", "endpoint": "s"}"#,
        );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/hostname", ws.path().join("good/link.js")).unwrap();
        ws.write(
            "good/link.websocket",
            r#"{"handler": "good/link", "endpoint": "l"}"#,
        );
    }
    let (code, output) = run_check(ws.path());
    assert_eq!(code, 1, "{output}");
    let mut expected = vec![
        "bad/abs.websocket: handler \"/etc/passwd\" is an absolute path: write it from the workspace root, starting with the project folder",
        "bad/array.websocket: expected a JSON object with \"handler\" and \"endpoint\", found an array",
        "bad/badname.websocket: invalid endpoint \"a b\": use 1-255 characters of A-Z a-z 0-9 _ . -",
        "bad/escape.websocket: handler \"../etc/passwd\" uses \"..\": it may not leave the workspace",
        "bad/json.websocket: invalid JSON at line 1, column 13: EOF while parsing a value",
        "bad/missing.websocket: handler \"bad/missing\" not found: tried bad/missing, bad/missing.js, bad/missing.mjs, bad/missing.cjs, bad/missing.ts, bad/missing.mts, bad/missing.cts",
        "bad/noendpoint.websocket: missing required field \"endpoint\"",
        "bad/nohandler.websocket: missing required field \"handler\"",
        "bad/number.websocket: field \"handler\" must be a string",
    ];
    if cfg!(unix) {
        expected.push("good/link.websocket: handler \"good/link\" resolves to /etc/hostname through a symbolic link: it may not leave the workspace");
    }
    expected.extend([
        "stray.websocket: descriptor is not inside a project folder: move it into a top-level folder of the workspace",
        "zz/dup.websocket: duplicate endpoint \"good\": already defined by good/good.websocket; this descriptor is skipped",
        "good/warn.websocket: warning: unknown field \"colour\" ignored",
        "bad/esyntax.mjs:3:13: SyntaxError: unexpected token in expression: ';'",
        "bad/import.mjs: cannot find module \"./nope.mjs\" from bad/import.mjs: no file bad/nope.mjs (tried .js, .mjs, .cjs, .ts, .mts, .cts, .json and index files)",
        "bad/remote.mjs: cannot import \"https://example.com/x.js\" from bad/remote.mjs: remote modules are not allowed; copy the code into the workspace",
        "bad/syntax.js:2:13: SyntaxError: unexpected token in expression: ';'",
    ]);
    let lines: Vec<&str> = output.lines().collect();
    let problem_count = expected.len() - 1;
    // Six descriptors are valid, even where their handler does not compile.
    expected.push("");
    let summary = format!(
        "6 endpoint(s), {problem_count} problem(s) in {}",
        ws.path().display()
    );
    let last = expected.len() - 1;
    expected[last] = &summary;
    assert_eq!(lines, expected, "full output:\n{output}");
}

#[test]
fn check_passes_the_sample_projects() {
    let projects = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("projects");
    let (code, output) = run_check(&projects);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("0 problem(s)"), "{output}");
}
