//! Endpoints declared in TypeScript, as Dirigible (v12) declares them: a file whose name ends in
//! `websocket.ts` (any case: `OrderWebsocket.ts`) with a class decorated
//! `@Websocket({ name: "...", endpoint: "order-ws" })` binds that endpoint to the file itself, whose
//! exported `onOpen/onMessage/onError/onClose` handle it. A file with no such decorator is just a
//! module.
//!
//! The declaration is read from the file's tokens (deno_ast's lexer), not by running the code or
//! parsing the whole file: a half-typed syntax error elsewhere in the file leaves the endpoint
//! bound (its handler fails to load and the last good code keeps serving, as for any handler),
//! and `@Websocket` inside a comment or a string is not a declaration. Like Dirigible's parser,
//! any decorator whose name ends in `Websocket` counts (`@Websocket`, `@decorators.Websocket`).

use std::path::Path;

use deno_ast::{MediaType, TokenOrComment};

use serde_json::{Map, Value};

use super::descriptor::{endpoint_options, is_valid_endpoint, EndpointOptions, OPTION_FIELDS};

/// A file name ending (lower-cased) that marks a module that may declare endpoints.
pub const DECLARING_SUFFIX: &str = "websocket.ts";

/// Whether `path` is a file the scan reads for `@Websocket` declarations.
pub fn may_declare_endpoints(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.to_ascii_lowercase().ends_with(DECLARING_SUFFIX))
}

/// One `@Websocket` class decorator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The decorated class's name, if it has one.
    pub class: Option<String>,
    /// The decorator's `name` option (Dirigible's display name), if given.
    pub name: Option<String>,
    /// The endpoint name, checked as a descriptor's is.
    pub endpoint: String,
    /// The optional `description` option, shown in listings (the `name` when absent).
    pub description: Option<String>,
    /// The endpoint options a descriptor could give (`instances`, `maxMessageSize`,
    /// `compression`, ...), given as literals and checked by the descriptor's own rules.
    pub options: EndpointOptions,
    /// Options the scan does not know, for a warning.
    pub unknown_options: Vec<String>,
}

/// One property of a decorator's options object.
struct OptionProperty {
    /// Its name.
    key: String,
    /// Its value, when that is a string literal (a template literal included).
    text: Option<String>,
    /// Its value as JSON, when that is a literal (see `json_literal`).
    json: Option<Value>,
}

/// A `@Websocket` decorator the scan cannot use: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct DeclarationError {
    /// Line of the `@`, from 1.
    pub line: usize,
    /// Column of the `@`, from 1.
    pub column: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Every `@Websocket` class decorator in a module's text, in order.
pub fn declarations(source: &str) -> Vec<Result<Declaration, DeclarationError>> {
    // Most modules never mention it: no need to tokenize them.
    if !source.contains("Websocket") {
        return Vec::new();
    }
    let tokens = Tokens::new(source);
    let mut found = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        if tokens.text(at) == "@" {
            if let Some(call) = tokens.websocket_call(at) {
                found.push(tokens.declaration(at, call));
                at = call;
                continue;
            }
        }
        at += 1;
    }
    found
}

/// The tokens of a module, as text, with where each begins.
struct Tokens<'a> {
    /// The module's text.
    source: &'a str,
    /// Each token's byte range in `source` (comments left out).
    ranges: Vec<std::ops::Range<usize>>,
}

impl<'a> Tokens<'a> {
    fn new(source: &'a str) -> Self {
        let ranges = deno_ast::lex(source, MediaType::TypeScript)
            .into_iter()
            .filter(|item| matches!(item.inner, TokenOrComment::Token(_)))
            .map(|item| item.range)
            .collect();
        Self { source, ranges }
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The text of token `index`, or "" past the end.
    fn text(&self, index: usize) -> &'a str {
        self.ranges
            .get(index)
            .and_then(|range| self.source.get(range.clone()))
            .unwrap_or("")
    }

    /// Line and column (from 1, in characters) where token `index` begins.
    fn position(&self, index: usize) -> (usize, usize) {
        let start = self.ranges.get(index).map_or(0, |range| range.start);
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, column)
    }

    /// With an `@` at `at`: the index of the `(` of a call of a decorator named `Websocket`
    /// (`@Websocket(`, `@net.decorators.Websocket(`), if that is what follows.
    fn websocket_call(&self, at: usize) -> Option<usize> {
        let mut index = at + 1;
        loop {
            if !is_identifier(self.text(index)) {
                return None;
            }
            match self.text(index + 1) {
                "." => index += 2,
                "(" => return (self.text(index) == "Websocket").then_some(index + 1),
                _ => return None,
            }
        }
    }

    /// The index just past the bracket that closes the one at `open`, or the end.
    fn past_closing(&self, open: usize) -> usize {
        let mut depth = 0usize;
        for index in open..self.len() {
            match self.text(index) {
                "(" | "[" | "{" | "${" => depth += 1,
                ")" | "]" | "}" => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return index + 1;
                    }
                }
                _ => {}
            }
        }
        self.len()
    }

    /// The declaration made by the decorator whose `@` is at `at` and whose `(` is at `call`.
    fn declaration(&self, at: usize, call: usize) -> Result<Declaration, DeclarationError> {
        let (line, column) = self.position(at);
        let fail = |message: String| DeclarationError {
            line,
            column,
            message,
        };
        let class = self
            .decorated_class(self.past_closing(call))
            .ok_or_else(|| {
                fail(
                    "@Websocket decorates a class; what follows it here is not a class declaration"
                        .into(),
                )
            })?;
        let on = match &class {
            Some(name) => format!("@Websocket on class {name}"),
            None => "@Websocket".to_string(),
        };
        if self.text(call + 1) != "{" {
            return Err(fail(format!(
                "{on}: expected an object literal such as {{ name: \"orders\", endpoint: \"order-ws\" }}"
            )));
        }
        let options = self
            .options(call + 1)
            .map_err(|m| fail(format!("{on}: {m}")))?;
        let mut declaration = Declaration {
            class,
            name: None,
            endpoint: String::new(),
            description: None,
            options: EndpointOptions::default(),
            unknown_options: Vec::new(),
        };
        let mut endpoint = None;
        // The options a descriptor could give, as the JSON its file would hold.
        let mut descriptor_options = Map::new();
        for OptionProperty {
            key,
            text: value,
            json,
        } in options
        {
            let literal = |value: Option<String>| {
                value.ok_or_else(|| {
                    fail(format!(
                        "{on}: \"{key}\" must be a string literal (the workspace scan reads it without running the code)"
                    ))
                })
            };
            match key.as_str() {
                "endpoint" => endpoint = Some(literal(value)?),
                "name" => declaration.name = Some(literal(value)?),
                "description" => declaration.description = Some(literal(value)?),
                field if OPTION_FIELDS.contains(&field) => {
                    let json = json.ok_or_else(|| {
                        fail(format!(
                            "{on}: \"{key}\" must be a literal: a number, a string, or an array or object of them (the workspace scan reads it without running the code)"
                        ))
                    })?;
                    descriptor_options.insert(key, json);
                }
                _ => declaration.unknown_options.push(key),
            }
        }
        declaration.options = endpoint_options(&descriptor_options)
            .map_err(|error| fail(format!("{on}: {error}")))?;
        let endpoint =
            endpoint.ok_or_else(|| fail(format!("{on}: missing required option \"endpoint\"")))?;
        if !is_valid_endpoint(&endpoint) {
            return Err(fail(format!(
                "{on}: invalid endpoint {endpoint:?}: use 1-255 characters of A-Z a-z 0-9 _ . -"
            )));
        }
        declaration.endpoint = endpoint;
        Ok(declaration)
    }

    /// From just past a decorator: the class it decorates (its name, if it has one), passing any
    /// further decorators and the modifiers a class declaration may carry; `None` if no class
    /// declaration follows.
    fn decorated_class(&self, mut index: usize) -> Option<Option<String>> {
        loop {
            match self.text(index) {
                "@" => {
                    // Another decorator: its name, then its arguments if it is called.
                    index += 1;
                    while is_identifier(self.text(index)) && self.text(index + 1) == "." {
                        index += 2;
                    }
                    index += 1;
                    if self.text(index) == "(" {
                        index = self.past_closing(index);
                    }
                }
                "export" | "default" | "abstract" | "declare" => index += 1,
                "class" => {
                    let name = self.text(index + 1);
                    let named = is_identifier(name) && !matches!(name, "extends" | "implements");
                    return Some(named.then(|| name.to_string()));
                }
                _ => return None,
            }
        }
    }

    /// The properties of the object literal whose `{` is at `open`: each key, with its value when
    /// the value is a plain string literal, and the value as JSON when it is a literal.
    fn options(&self, open: usize) -> Result<Vec<OptionProperty>, String> {
        let end = self.past_closing(open) - 1;
        let mut properties = Vec::new();
        let mut index = open + 1;
        while index < end {
            let key_token = self.text(index);
            let key = string_literal(key_token)
                .or_else(|| is_identifier(key_token).then(|| key_token.to_string()))
                .ok_or_else(|| {
                    format!("expected an option name such as endpoint, found {key_token}")
                })?;
            index += 1;
            // The value: the tokens up to the next comma at this depth.
            let value_start = if self.text(index) == ":" {
                index + 1
            } else {
                index
            };
            let mut value_end = value_start;
            while value_end < end && self.text(value_end) != "," {
                value_end = match self.text(value_end) {
                    "(" | "[" | "{" | "${" => self.past_closing(value_end),
                    _ => value_end + 1,
                };
            }
            let value = match (self.text(index) == ":", value_end - value_start) {
                (true, 1) => string_literal(self.text(value_start)),
                // A template literal is lexed as its quotes and its text; with a substitution, it
                // has more tokens than that.
                (true, 2 | 3)
                    if self.text(value_start) == "`" && self.text(value_end - 1) == "`" =>
                {
                    Some(if value_end - value_start == 3 {
                        self.text(value_start + 1).to_string()
                    } else {
                        String::new()
                    })
                }
                _ => None,
            };
            let literal = (self.text(index) == ":")
                .then(|| self.json_literal(value_start, value_end))
                .flatten();
            properties.push(OptionProperty {
                key,
                text: value,
                json: literal,
            });
            index = value_end + 1;
        }
        Ok(properties)
    }

    /// The tokens `start..end` as JSON, when they are a literal: a number (decimal or hex, with
    /// `_` separators, maybe negative), a string, `true`, `false`, `null`, or an array or object
    /// of those (object keys as identifiers or strings, trailing commas allowed).
    fn json_literal(&self, start: usize, end: usize) -> Option<Value> {
        let mut at = start;
        let value = self.json_value(&mut at, end)?;
        (at == end).then_some(value)
    }

    /// The literal that starts at `at`, moving `at` past it.
    fn json_value(&self, at: &mut usize, end: usize) -> Option<Value> {
        if *at >= end {
            return None;
        }
        let token = self.text(*at);
        *at += 1;
        match token {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            "null" => Some(Value::Null),
            "-" => match self.json_value(at, end)? {
                Value::Number(n) => match n.as_i64() {
                    Some(whole) => Some(Value::from(-whole)),
                    None => serde_json::Number::from_f64(-n.as_f64()?).map(Value::Number),
                },
                _ => None,
            },
            "[" => {
                let mut items = Vec::new();
                while self.text(*at) != "]" {
                    items.push(self.json_value(at, end)?);
                    self.past_separator(at, "]")?;
                }
                *at += 1;
                Some(Value::Array(items))
            }
            "{" => {
                let mut object = Map::new();
                while self.text(*at) != "}" {
                    let key = self.text(*at);
                    let key = string_literal(key)
                        .or_else(|| is_identifier(key).then(|| key.to_string()))?;
                    *at += 1;
                    if self.text(*at) != ":" {
                        return None;
                    }
                    *at += 1;
                    object.insert(key, self.json_value(at, end)?);
                    self.past_separator(at, "}")?;
                }
                *at += 1;
                Some(Value::Object(object))
            }
            _ => string_literal(token)
                .map(Value::String)
                .or_else(|| number_literal(token)),
        }
    }

    /// Past the `,` after an array item or object member, or at the `close` that ends them.
    fn past_separator(&self, at: &mut usize, close: &str) -> Option<()> {
        match self.text(*at) {
            "," => {
                *at += 1;
                Some(())
            }
            text if text == close => Some(()),
            _ => None,
        }
    }
}

/// A number literal token as JSON: decimal (with a fraction or exponent) or hexadecimal, `_`
/// separators allowed.
fn number_literal(token: &str) -> Option<Value> {
    let digits = token.replace('_', "");
    if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if !digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    if let Ok(whole) = digits.parse::<u64>() {
        return Some(Value::from(whole));
    }
    serde_json::Number::from_f64(digits.parse::<f64>().ok()?).map(Value::Number)
}

/// Whether a token is an identifier (or a keyword, which the caller tells apart).
fn is_identifier(token: &str) -> bool {
    let mut chars = token.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// The value of a string literal token (`"a"`, `'a'`, or a template with no substitutions).
fn string_literal(token: &str) -> Option<String> {
    let quote = token.chars().next()?;
    if !matches!(quote, '"' | '\'' | '`') || token.len() < 2 || !token.ends_with(quote) {
        return None;
    }
    let body = &token[1..token.len() - 1];
    if quote == '`' && body.contains("${") {
        return None;
    }
    if !body.contains('\\') {
        return Some(body.to_string());
    }
    // Escapes are rare in endpoint names; JSON's cover the common ones.
    let json = format!("\"{}\"", body.replace('"', "\\\"").replace("\\'", "'"));
    serde_json::from_str(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CompressionMode;
    use crate::workspace::descriptor::Instances;

    fn endpoints(source: &str) -> Vec<Result<String, String>> {
        declarations(source)
            .into_iter()
            .map(|d| d.map(|d| d.endpoint).map_err(|e| e.to_string()))
            .collect()
    }

    #[test]
    fn reads_dirigibles_sample() {
        let source = r#"import { Websocket } from "@aerokit/sdk/net";

@Websocket({
    name: "sample-websocket-decorator/OrderWebsocket",
    endpoint: "order-ws",
})
export class OrderWebsocket {
    public static onMessage(message: string, from: string) { return `Hello [${message}]`; }
}
"#;
        let found = declarations(source);
        assert_eq!(
            found,
            vec![Ok(Declaration {
                class: Some("OrderWebsocket".into()),
                name: Some("sample-websocket-decorator/OrderWebsocket".into()),
                endpoint: "order-ws".into(),
                description: None,
                options: EndpointOptions::default(),
                unknown_options: vec![],
            })]
        );
    }

    #[test]
    fn descriptor_options_are_read_as_literals_and_checked_as_a_descriptor_s() {
        let options = |options: &str| {
            declarations(&format!(
                "@Websocket({{ endpoint: 'e', {options} }})\nclass A {{}}"
            ))
            .remove(0)
            .map(|d| d.options)
            .map_err(|e| e.message)
        };
        let instances = |given: &str| options(given).map(|o| o.instances);
        assert_eq!(instances("instances: 2"), Ok(Some(Instances::Fixed(2))));
        assert_eq!(instances("instances: \"auto\""), Ok(Some(Instances::Auto)));
        assert_eq!(
            instances("instances: 0"),
            Err("@Websocket on class A: field \"instances\": must be a whole number from 1 to 64, or \"auto\" (one per core), got 0".into())
        );
        assert!(instances("instances: cores()")
            .unwrap_err()
            .contains("\"instances\" must be a literal"));

        let all = options(
            "maxMessageSize: 64 * 1024, maxConnections: 1_000, compression: 'dedicated', compressionWindowBits: 0xA, \
             allowedOrigins: ['https://a.example', \"https://b.example\",], service: { interval: '2s' }",
        );
        assert!(all
            .unwrap_err()
            .contains("\"maxMessageSize\" must be a literal"));
        let all = options(
            "maxMessageSize: 65536, maxConnections: 1_000, compression: 'dedicated', compressionWindowBits: 0xA, \
             allowedOrigins: ['https://a.example', \"https://b.example\",], service: { interval: '2s' }",
        )
        .unwrap();
        assert_eq!(all.max_message_size, Some(65536));
        assert_eq!(all.max_connections, Some(1000));
        assert!(matches!(
            all.compression,
            Some(CompressionMode::Dedicated { .. })
        ));
        assert_eq!(
            all.allowed_origins,
            Some(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            all.service_interval,
            Some(std::time::Duration::from_secs(2))
        );
        // A negative whole number reads as the descriptor's JSON would hold it.
        assert!(options("maxConnections: -1").unwrap_err().ends_with(
            "field \"maxConnections\": must be a whole number from 1 to 10000000, got -1"
        ));
        assert_eq!(
            options("compression: 'fast'").unwrap_err(),
            "@Websocket on class A: field \"compression\": unknown compression \"fast\": use \"off\", \"shared\" or \"dedicated\"".to_string()
        );
    }

    #[test]
    fn member_names_other_decorators_and_modifiers() {
        let source = "@decorators.Websocket({ endpoint: 'a', extra: [1, 2] }) @Other() export default abstract class {}\n\
                      @sealed\n@net.Websocket({ \"endpoint\": `b`, name: 'B' })\nclass B {}";
        let found = declarations(source);
        assert_eq!(found.len(), 2);
        let first = found[0].as_ref().unwrap();
        assert_eq!((first.class.clone(), first.endpoint.as_str()), (None, "a"));
        assert_eq!(first.unknown_options, vec!["extra".to_string()]);
        assert_eq!(found[1].as_ref().unwrap().endpoint, "b");
    }

    #[test]
    fn comments_strings_and_other_decorators_are_not_declarations() {
        assert_eq!(
            endpoints("// @Websocket({ endpoint: \"x\" })\nconst s = \"@Websocket({ endpoint: 'y' })\";\n@WebsocketLike({ endpoint: 'z' }) class Z {}"),
            Vec::<Result<String, String>>::new()
        );
    }

    #[test]
    fn problems_say_where_and_what() {
        assert_eq!(
            endpoints("const e = 'x';\n\n  @Websocket({ name: 'n', endpoint: e })\nclass A {}"),
            vec![Err("3:3: @Websocket on class A: \"endpoint\" must be a string literal (the workspace scan reads it without running the code)".into())]
        );
        assert_eq!(
            endpoints("@Websocket({ name: 'n' }) class A {}"),
            vec![Err(
                "1:1: @Websocket on class A: missing required option \"endpoint\"".into()
            )]
        );
        assert_eq!(
            endpoints("@Websocket({ endpoint: 'a b' }) class A {}"),
            vec![Err("1:1: @Websocket on class A: invalid endpoint \"a b\": use 1-255 characters of A-Z a-z 0-9 _ . -".into())]
        );
        assert_eq!(
            endpoints("class A { @Websocket({ endpoint: 'm' }) method() {} }"),
            vec![Err("1:11: @Websocket decorates a class; what follows it here is not a class declaration".into())]
        );
        assert_eq!(
            endpoints("@Websocket(options) class A {}"),
            vec![Err("1:1: @Websocket on class A: expected an object literal such as { name: \"orders\", endpoint: \"order-ws\" }".into())]
        );
    }

    #[test]
    fn a_syntax_error_elsewhere_leaves_the_declaration_readable() {
        assert_eq!(
            endpoints("@Websocket({ endpoint: 'still' })\nexport class A {}\nexport function onMessage(m: string) { return m +; }"),
            vec![Ok("still".into())]
        );
    }

    #[test]
    fn file_names_that_may_declare() {
        assert!(may_declare_endpoints(Path::new("p/OrderWebsocket.ts")));
        assert!(may_declare_endpoints(Path::new("p/orders.websocket.ts")));
        assert!(may_declare_endpoints(Path::new("p/WEBSOCKET.TS")));
        assert!(!may_declare_endpoints(Path::new("p/Websockets.ts")));
        assert!(!may_declare_endpoints(Path::new("p/order.websocket")));
    }
}
