//! Parsing and validating one `*.websocket` descriptor (Dirigible's format).

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::paths::{PathError, WorkspacePaths};
use crate::limits::CompressionMode;

/// The endpoint options a descriptor may give besides its handler, endpoint and description; a
/// `@Websocket` decorator may give the same, checked by the same rules ([`endpoint_options`]).
pub const OPTION_FIELDS: &[&str] = &[
    "maxMessageSize",
    "maxConnections",
    "allowedOrigins",
    "service",
    "compression",
    "compressionWindowBits",
    "instances",
];

/// Fields a descriptor may carry besides [`OPTION_FIELDS`]; anything else is reported as a
/// warning.
const OTHER_KNOWN_FIELDS: &[&str] = &[
    "handler",
    "endpoint",
    "description",
    "engine",
    // Written by Dirigible itself into the descriptors it generates: normal, and ignored.
    "location",
    "createdBy",
    "createdAt",
];

/// The largest `maxMessageSize` a descriptor may ask for.
const MAX_MESSAGE_SIZE_CEILING: u64 = 1 << 30;

/// The most `instances` a descriptor may ask for: each is an isolate with its own thread and
/// heap, and more instances than cores only add memory.
pub const MAX_INSTANCES: usize = 64;

/// How many isolates run an endpoint's handler module (the descriptor's `instances`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// This many.
    Fixed(usize),
    /// One per core the process may use (`"auto"`).
    Auto,
}

impl Instances {
    /// `count` instances, if a descriptor may ask for that many.
    pub fn fixed(count: u64) -> Option<Self> {
        (1..=MAX_INSTANCES as u64)
            .contains(&count)
            .then_some(Instances::Fixed(count as usize))
    }

    /// Why a value of `instances` cannot be used, `got` being the value as written.
    pub fn problem(got: &str) -> String {
        format!("must be a whole number from 1 to {MAX_INSTANCES}, or \"auto\" (one per core), got {got}")
    }

    /// How many isolates that is on this machine.
    pub fn count(self) -> usize {
        match self {
            Instances::Fixed(count) => count,
            Instances::Auto => std::thread::available_parallelism()
                .map(|cores| cores.get())
                .unwrap_or(1)
                .min(MAX_INSTANCES),
        }
    }
}

/// Per-endpoint settings of a descriptor; `None` means the server-wide default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// Largest message accepted from a peer, in bytes.
    pub max_message_size: Option<usize>,
    /// Most connections open at once on this endpoint.
    pub max_connections: Option<usize>,
    /// Origins allowed to connect (browsers send `Origin`); `*` allows any.
    pub allowed_origins: Option<Vec<String>>,
    /// Runs the handler's `onTick` export at this interval (a periodic global service).
    pub service_interval: Option<std::time::Duration>,
    /// permessage-deflate on this endpoint (`compression`, `compressionWindowBits`).
    pub compression: Option<CompressionMode>,
    /// How many isolates run the handler module (`instances`); one when not set.
    pub instances: Option<Instances>,
}

impl EndpointOptions {
    /// How many isolates the endpoint's handler runs.
    pub fn instance_count(&self) -> usize {
        self.instances.map_or(1, Instances::count)
    }
}

/// A descriptor that parsed and whose handler module exists inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The endpoint name, unique across the workspace: the last segment of the upgrade URL.
    pub endpoint: String,
    /// The handler as written in the descriptor (`my-project/ws-handler`), used in logs and listings.
    pub handler: String,
    /// The handler module's file, canonical and inside the workspace.
    pub handler_file: PathBuf,
    /// Free text shown in listings.
    pub description: String,
    /// The `engine` field, kept only so the log can say how it was interpreted.
    pub engine: Option<String>,
    /// Per-endpoint limits and services.
    pub options: EndpointOptions,
    /// Non-fatal remarks (unknown fields), reported but not blocking.
    pub warnings: Vec<String>,
}

/// Why a descriptor was skipped. Each message is complete on its own: the caller prefixes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The descriptor file could not be read.
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// Not JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// Where the parser stopped: line, from 1.
        line: usize,
        /// Where the parser stopped: column, from 1.
        column: usize,
        /// The parser's words, without its position.
        message: String,
    },
    /// JSON, but not an object.
    #[error("expected a JSON object with \"handler\" and \"endpoint\", found {0}")]
    NotAnObject(&'static str),
    /// A required field is missing.
    #[error("missing required field \"{0}\"")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field \"{field}\" must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The endpoint name cannot be a URL path segment.
    #[error("invalid endpoint {0:?}: use 1-255 characters of A-Z a-z 0-9 _ . -")]
    InvalidEndpoint(String),
    /// The handler path would leave the workspace (or is empty).
    #[error("handler {handler:?} {reason}")]
    HandlerOutsideWorkspace {
        /// The handler as written.
        handler: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// No handler file has that name.
    #[error("handler {handler:?} not found: tried {tried}")]
    HandlerNotFound {
        /// The handler as written.
        handler: String,
        /// The files tried, relative to the workspace.
        tried: String,
    },
    /// An optional field has a value that cannot be used.
    #[error("field \"{field}\": {problem}")]
    InvalidOption {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Parses a descriptor's text and resolves its handler in the workspace.
pub fn parse_descriptor(text: &str, paths: &WorkspacePaths) -> Result<Descriptor, DescriptorError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DescriptorError::InvalidJson {
        line: e.line(),
        column: e.column(),
        message: json_error_message(&e),
    })?;
    let object = match value {
        Value::Object(object) => object,
        other => return Err(DescriptorError::NotAnObject(json_kind(&other))),
    };
    let handler = required_string(&object, "handler")?;
    let endpoint = required_string(&object, "endpoint")?;
    if !is_valid_endpoint(&endpoint) {
        return Err(DescriptorError::InvalidEndpoint(endpoint));
    }
    let description = optional_string(&object, "description")?.unwrap_or_default();
    let engine = optional_string(&object, "engine")?;
    let warnings = object
        .keys()
        .filter(|key| {
            !OPTION_FIELDS.contains(&key.as_str()) && !OTHER_KNOWN_FIELDS.contains(&key.as_str())
        })
        .map(|key| format!("unknown field \"{key}\" ignored"))
        .collect();
    let options = endpoint_options(&object)?;
    let handler_file = resolve_handler(&handler, paths)?;
    Ok(Descriptor {
        endpoint,
        handler,
        handler_file,
        description,
        engine,
        options,
        warnings,
    })
}

/// Endpoint names become URL path segments, so they are restricted to a safe set.
pub fn is_valid_endpoint(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Resolves a descriptor's (or `createWebsocket`'s) handler path (`project/dir/module`,
/// extension optional) to a canonical file inside the workspace.
pub fn resolve_handler(handler: &str, paths: &WorkspacePaths) -> Result<PathBuf, DescriptorError> {
    let outside = |reason: String| DescriptorError::HandlerOutsideWorkspace {
        handler: handler.to_string(),
        reason,
    };
    paths.handler(handler).map_err(|error| match error {
        PathError::Empty => outside("is empty: name a module such as \"my-project/handler\"".into()),
        PathError::Absolute => outside(
            "is an absolute path: write it from the workspace root, starting with the project folder"
                .into(),
        ),
        PathError::ParentComponent | PathError::LeavesBoundary => {
            outside("uses \"..\": it may not leave the workspace".into())
        }
        PathError::LinkOut { target, .. } => outside(format!(
            "resolves to {} through a symbolic link: it may not leave the workspace",
            target.display()
        )),
        PathError::Unresolvable { reason, .. } => outside(format!("cannot be resolved: {reason}")),
        PathError::NotFound { tried, .. } => DescriptorError::HandlerNotFound {
            handler: handler.to_string(),
            tried: tried
                .iter()
                .map(|path| paths.display(path))
                .collect::<Vec<_>>()
                .join(", "),
        },
        PathError::NoProject(project) => DescriptorError::HandlerNotFound {
            handler: handler.to_string(),
            tried: project,
        },
    })
}

/// The endpoint options in a descriptor's fields (or a decorator's options, as the same JSON).
pub fn endpoint_options(object: &Map<String, Value>) -> Result<EndpointOptions, DescriptorError> {
    let invalid =
        |field: &'static str, problem: String| DescriptorError::InvalidOption { field, problem };
    let positive = |field: &'static str, ceiling: u64| -> Result<Option<usize>, DescriptorError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v >= 1 && v <= ceiling => Ok(Some(v as usize)),
                _ => Err(invalid(
                    field,
                    format!("must be a whole number from 1 to {ceiling}, got {n}"),
                )),
            },
            Some(other) => Err(invalid(
                field,
                format!("must be a number, got {}", json_kind(other)),
            )),
        }
    };
    let max_message_size = positive("maxMessageSize", MAX_MESSAGE_SIZE_CEILING)?;
    let max_connections = positive("maxConnections", 10_000_000)?;
    let allowed_origins = match object.get("allowedOrigins") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut origins = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(origin) if origin == "*" || origin.contains("://") => {
                        origins.push(origin.trim_end_matches('/').to_ascii_lowercase())
                    }
                    Value::String(origin) => {
                        return Err(invalid(
                            "allowedOrigins",
                            format!("{origin:?} is not an origin: write scheme://host[:port], e.g. \"https://example.com\", or \"*\""),
                        ))
                    }
                    other => {
                        return Err(invalid(
                            "allowedOrigins",
                            format!("must hold strings, found {}", json_kind(other)),
                        ))
                    }
                }
            }
            Some(origins)
        }
        Some(other) => {
            return Err(invalid(
                "allowedOrigins",
                format!("must be an array of origins, got {}", json_kind(other)),
            ))
        }
    };
    let service_interval = match object.get("service") {
        None | Some(Value::Null) => None,
        Some(Value::Object(service)) => {
            let interval = service.get("interval").unwrap_or(&Value::Null);
            Some(parse_interval(interval).map_err(|problem| invalid("service", problem))?)
        }
        Some(other) => {
            return Err(invalid(
                "service",
                format!(
                    "must be an object such as {{\"interval\": \"10s\"}}, got {}",
                    json_kind(other)
                ),
            ))
        }
    };
    let window_bits = match object.get("compressionWindowBits") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(bits @ 8..=15) => Some(bits as u8),
            _ => {
                return Err(invalid(
                    "compressionWindowBits",
                    format!("must be a whole number from 8 to 15, got {n}"),
                ))
            }
        },
        Some(other) => {
            return Err(invalid(
                "compressionWindowBits",
                format!("must be a number, got {}", json_kind(other)),
            ))
        }
    };
    let compression = match object.get("compression") {
        None | Some(Value::Null) if window_bits.is_some() => {
            return Err(invalid(
                "compressionWindowBits",
                "applies to \"compression\": \"dedicated\" only, and compression is not set"
                    .to_string(),
            ))
        }
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(
            CompressionMode::parse(name, window_bits)
                .map_err(|problem| invalid("compression", problem))?,
        ),
        Some(other) => {
            return Err(invalid(
                "compression",
                format!(
                    "must be \"off\", \"shared\" or \"dedicated\", got {}",
                    json_kind(other)
                ),
            ))
        }
    };
    let instances = match object.get("instances") {
        None | Some(Value::Null) => None,
        Some(Value::String(word)) if word == "auto" => Some(Instances::Auto),
        Some(Value::Number(n)) => match n.as_u64().and_then(Instances::fixed) {
            Some(instances) => Some(instances),
            None => return Err(invalid("instances", Instances::problem(&n.to_string()))),
        },
        Some(other) => {
            let got = match other {
                Value::String(text) => format!("{text:?}"),
                other => json_kind(other).to_string(),
            };
            return Err(invalid("instances", Instances::problem(&got)));
        }
    };
    Ok(EndpointOptions {
        max_message_size,
        max_connections,
        allowed_origins,
        service_interval,
        compression,
        instances,
    })
}

/// A service interval: milliseconds as a number, or text such as "10s", "500 ms", "2m", "1h".
pub fn parse_interval(value: &Value) -> Result<std::time::Duration, String> {
    const HINT: &str =
        "interval must be milliseconds (a number) or text such as \"10s\", \"500ms\", \"2m\"";
    let millis = match value {
        Value::Null => return Ok(std::time::Duration::from_secs(10)),
        Value::Number(n) => n.as_f64().ok_or_else(|| HINT.to_string())?,
        Value::String(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: f64 = number
                .parse()
                .map_err(|_| format!("{HINT}, got {text:?}"))?;
            let scale = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "ms" => 1.0,
                "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
                "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
                "h" | "hour" | "hours" => 3_600_000.0,
                _ => return Err(format!("{HINT}, got {text:?}")),
            };
            number * scale
        }
        _ => return Err(HINT.to_string()),
    };
    if !(10.0..=86_400_000.0).contains(&millis) {
        return Err(format!(
            "interval must be between 10 ms and 24 h, got {millis} ms"
        ));
    }
    Ok(std::time::Duration::from_millis(millis as u64))
}

fn required_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<String, DescriptorError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(DescriptorError::MissingField(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(DescriptorError::WrongType {
            field,
            expected: "a non-empty string",
        }),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(_) => Err(DescriptorError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, DescriptorError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DescriptorError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json appends " at line X column Y" to its messages; the position is reported separately.
fn json_error_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, WorkspacePaths) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p/lib")).unwrap();
        std::fs::write(dir.path().join("p/h.js"), "").unwrap();
        std::fs::write(dir.path().join("p/lib/m.mjs"), "").unwrap();
        let paths = WorkspacePaths::new(dir.path()).unwrap();
        (dir, paths)
    }

    #[test]
    fn resolves_handler_with_and_without_extension() {
        let (_dir, paths) = workspace();
        let root = paths.root();
        let d = parse_descriptor(r#"{"handler":"p/h","endpoint":"e"}"#, &paths).unwrap();
        assert_eq!(d.handler_file, root.join("p/h.js"));
        let d = parse_descriptor(r#"{"handler":"p/lib/m","endpoint":"e"}"#, &paths).unwrap();
        assert_eq!(d.handler_file, root.join("p/lib/m.mjs"));
        let d = parse_descriptor(r#"{"handler":"p/h.js","endpoint":"e"}"#, &paths).unwrap();
        assert_eq!(d.handler_file, root.join("p/h.js"));
    }

    #[test]
    fn reports_each_kind_of_error() {
        let (_dir, paths) = workspace();
        let err = |text: &str| parse_descriptor(text, &paths).unwrap_err().to_string();
        assert_eq!(
            err("{\"handler\": }"),
            "invalid JSON at line 1, column 13: expected value"
        );
        assert_eq!(
            err("[]"),
            "expected a JSON object with \"handler\" and \"endpoint\", found an array"
        );
        assert_eq!(
            err(r#"{"endpoint":"e"}"#),
            "missing required field \"handler\""
        );
        assert_eq!(
            err(r#"{"handler":"p/h"}"#),
            "missing required field \"endpoint\""
        );
        assert_eq!(
            err(r#"{"handler":1,"endpoint":"e"}"#),
            "field \"handler\" must be a string"
        );
        assert_eq!(
            err(r#"{"handler":"p/h","endpoint":"a/b"}"#),
            "invalid endpoint \"a/b\": use 1-255 characters of A-Z a-z 0-9 _ . -"
        );
        assert!(err(r#"{"handler":"../x","endpoint":"e"}"#).contains("may not leave the workspace"));
        assert!(err(r#"{"handler":"/etc/passwd","endpoint":"e"}"#).contains("absolute path"));
        assert_eq!(
            err(r#"{"handler":"p/nope","endpoint":"e"}"#),
            "handler \"p/nope\" not found: tried p/nope, p/nope.js, p/nope.mjs, p/nope.cjs, p/nope.ts, p/nope.mts, p/nope.cts"
        );
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let (_dir, paths) = workspace();
        let d =
            parse_descriptor(r#"{"handler":"p/h","endpoint":"e","colour":"red"}"#, &paths).unwrap();
        assert_eq!(d.warnings, vec!["unknown field \"colour\" ignored"]);
        let dirigible = parse_descriptor(
            r#"{"handler":"p/h","endpoint":"e","location":"/p/e.websocket",
                "createdBy":"admin","createdAt":1733131200000}"#,
            &paths,
        )
        .unwrap();
        assert_eq!(dirigible.warnings, Vec::<String>::new());
    }

    #[test]
    fn endpoint_options_are_checked() {
        let (_dir, paths) = workspace();
        let d = parse_descriptor(
            r#"{"handler":"p/h","endpoint":"e","maxMessageSize":4096,"maxConnections":2,
                "allowedOrigins":["https://Example.com/"],"service":{"interval":"1.5s"}}"#,
            &paths,
        )
        .unwrap();
        assert_eq!(d.options.max_message_size, Some(4096));
        assert_eq!(d.options.max_connections, Some(2));
        assert_eq!(
            d.options.allowed_origins,
            Some(vec!["https://example.com".to_string()])
        );
        assert_eq!(
            d.options.service_interval,
            Some(std::time::Duration::from_millis(1500))
        );
        let err = |text: &str| parse_descriptor(text, &paths).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"handler":"p/h","endpoint":"e","maxMessageSize":0}"#),
            "field \"maxMessageSize\": must be a whole number from 1 to 1073741824, got 0"
        );
        assert_eq!(
            err(r#"{"handler":"p/h","endpoint":"e","allowedOrigins":"x"}"#),
            "field \"allowedOrigins\": must be an array of origins, got a string"
        );
        assert!(
            err(r#"{"handler":"p/h","endpoint":"e","service":{"interval":"soon"}}"#)
                .starts_with("field \"service\": interval must be milliseconds")
        );
        let compression = |text: &str| {
            parse_descriptor(
                &format!(r#"{{"handler":"p/h","endpoint":"e",{text}}}"#),
                &paths,
            )
            .map(|d| d.options.compression)
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            compression(r#""compression":"shared""#),
            Ok(Some(CompressionMode::Shared))
        );
        assert_eq!(
            compression(r#""compression":"dedicated","compressionWindowBits":10"#),
            Ok(Some(CompressionMode::Dedicated { window_bits: 10 }))
        );
        assert_eq!(
            compression(r#""compression":"dedicated""#),
            Ok(Some(CompressionMode::Dedicated { window_bits: 15 }))
        );
        assert_eq!(
            compression(r#""compression":"gzip""#),
            Err("field \"compression\": unknown compression \"gzip\": use \"off\", \"shared\" or \"dedicated\"".into())
        );
        assert_eq!(
            compression(r#""compression":"shared","compressionWindowBits":10"#),
            Err("field \"compression\": a window size applies to \"dedicated\" compression only, not \"shared\"".into())
        );
        assert_eq!(
            compression(r#""compression":"dedicated","compressionWindowBits":16"#),
            Err(
                "field \"compressionWindowBits\": must be a whole number from 8 to 15, got 16"
                    .into()
            )
        );
        assert_eq!(
            compression(r#""compressionWindowBits":9"#),
            Err("field \"compressionWindowBits\": applies to \"compression\": \"dedicated\" only, and compression is not set".into())
        );
        assert_eq!(
            parse_interval(&serde_json::json!(250)).unwrap(),
            std::time::Duration::from_millis(250)
        );
        assert_eq!(
            parse_interval(&serde_json::json!("20 s")).unwrap(),
            std::time::Duration::from_secs(20)
        );
    }

    #[test]
    fn instances_are_checked() {
        let (_dir, paths) = workspace();
        let instances = |value: &str| {
            parse_descriptor(
                &format!(r#"{{"handler":"p/h","endpoint":"e","instances":{value}}}"#),
                &paths,
            )
            .map(|d| (d.options.instances, d.options.instance_count()))
            .map_err(|e| e.to_string())
        };
        assert_eq!(instances("2"), Ok((Some(Instances::Fixed(2)), 2)));
        assert_eq!(instances("null"), Ok((None, 1)));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            instances(r#""auto""#),
            Ok((Some(Instances::Auto), cores.min(MAX_INSTANCES)))
        );
        let expected = |got: &str| {
            Err(format!("field \"instances\": must be a whole number from 1 to 64, or \"auto\" (one per core), got {got}"))
        };
        assert_eq!(instances("0"), expected("0"));
        assert_eq!(instances("65"), expected("65"));
        assert_eq!(instances("1.5"), expected("1.5"));
        assert_eq!(instances(r#""many""#), expected("\"many\""));
        assert_eq!(instances("[2]"), expected("an array"));
    }

    /// A small deterministic mutation fuzzer: every mutated descriptor either parses or yields
    /// a one-line error; none panics.
    #[test]
    fn fuzzed_descriptors_never_panic() {
        let (_dir, paths) = workspace();
        let seeds: [&[u8]; 3] = [
            br#"{"handler":"p/h","endpoint":"e","description":"d","engine":"v8"}"#,
            br#"{"handler":"p/lib/m","endpoint":"x.y-z","maxMessageSize":4096,"allowedOrigins":["https://a.b"],"service":{"interval":"10s"}}"#,
            br#"{"handler":"../p/h","endpoint":"e","maxConnections":3}"#,
        ];
        let alphabet: &[u8] = b"{}[]\":,./\\0123456789eE+-.nulltruefalse \t\n\xff\xc3\x80";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..(1 + random() % 6) {
                let at = (random() as usize) % (bytes.len() + 1);
                match random() % 4 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[(random() as usize) % alphabet.len()]),
                    2 if at < bytes.len() => bytes[at] = random() as u8,
                    _ => bytes.truncate(at),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(error) = parse_descriptor(&text, &paths) {
                let message = error.to_string();
                assert!(
                    !message.is_empty() && !message.contains('\n'),
                    "{message:?}"
                );
            }
        }
    }

    #[test]
    fn endpoint_names() {
        assert!(is_valid_endpoint("my-endpoint_1.v2"));
        assert!(!is_valid_endpoint(""));
        assert!(!is_valid_endpoint(&"a".repeat(256)));
        assert!(is_valid_endpoint(&"a".repeat(255)));
        assert!(!is_valid_endpoint("a b"));
    }
}
