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

use super::descriptor::{is_valid_endpoint, Instances, MAX_INSTANCES};

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
    /// The optional `instances` option: how many isolates run the module (as a descriptor's).
    pub instances: Option<Instances>,
    /// Options the scan does not know, for a warning.
    pub unknown_options: Vec<String>,
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
            instances: None,
            unknown_options: Vec::new(),
        };
        let mut endpoint = None;
        for (key, value, token) in options {
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
                "instances" => {
                    declaration.instances = Some(match (value.as_deref(), token.as_deref()) {
                        (Some("auto"), _) => Instances::Auto,
                        (None, Some(number)) => {
                            match number.parse::<u64>().ok().and_then(Instances::fixed) {
                                Some(instances) => instances,
                                None => {
                                    return Err(fail(format!(
                                        "{on}: \"instances\" {}",
                                        Instances::problem(number)
                                    )))
                                }
                            }
                        }
                        _ => {
                            return Err(fail(format!(
                                "{on}: \"instances\" must be a number literal from 1 to {MAX_INSTANCES}, or \"auto\" (the workspace scan reads it without running the code)"
                            )))
                        }
                    })
                }
                _ => declaration.unknown_options.push(key),
            }
        }
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
    /// the value is a plain string literal, and the value's token when it is a single token
    /// (a number, say).
    #[allow(clippy::type_complexity)]
    fn options(
        &self,
        open: usize,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, String> {
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
            let token = (self.text(index) == ":" && value_end - value_start == 1)
                .then(|| self.text(value_start).to_string());
            properties.push((key, value, token));
            index = value_end + 1;
        }
        Ok(properties)
    }
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
                instances: None,
                unknown_options: vec![],
            })]
        );
    }

    #[test]
    fn instances_is_read_as_a_descriptor_field() {
        let instances = |options: &str| {
            declarations(&format!(
                "@Websocket({{ endpoint: 'e', {options} }})\nclass A {{}}"
            ))
            .remove(0)
            .map(|d| d.instances)
            .map_err(|e| e.message)
        };
        assert_eq!(instances("instances: 2"), Ok(Some(Instances::Fixed(2))));
        assert_eq!(instances("instances: \"auto\""), Ok(Some(Instances::Auto)));
        assert_eq!(
            instances("instances: 0"),
            Err("@Websocket on class A: \"instances\" must be a whole number from 1 to 64, or \"auto\" (one per core), got 0".into())
        );
        assert!(instances("instances: cores()")
            .unwrap_err()
            .contains("must be a number literal"));
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
