//! The options object of `createWebsocket(uri, handler, options)`, as 4D's and B4X's clients have
//! them: headers, subprotocols, how messages are handed over, TLS trust, connect timeout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How received text is handed to the handler (4D's `dataType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Text as a string, binary as a Uint8Array.
    #[default]
    Text,
    /// Every message as a Uint8Array.
    Blob,
    /// Text parsed as JSON.
    Object,
}

/// A header value: one string, or several for a repeated header.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    /// One value.
    One(String),
    /// The header repeated, once per value.
    Many(Vec<String>),
}

/// `protocols` may be one name or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Protocols {
    /// One subprotocol.
    One(String),
    /// Several, in order of preference.
    Many(Vec<String>),
}

/// TLS settings of a `wss://` client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// A CA certificate to trust: PEM text, or a path (absolute, or from the workspace root).
    pub ca: Option<String>,
    /// Accept any certificate. Explicit opt-in for self-signed test servers.
    #[serde(default)]
    pub insecure: bool,
}

/// The options object of `createWebsocket(uri, handler, options)`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientOptions {
    /// Extra headers on the upgrade request.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Subprotocols to ask for.
    pub protocols: Option<Protocols>,
    /// How received messages are handed to the handler.
    #[serde(default)]
    pub data_type: DataType,
    /// Which servers to trust over `wss://`.
    #[serde(default)]
    pub tls: TlsOptions,
    /// How long connecting and the handshake may take (default 10 s).
    pub connect_timeout_ms: Option<u64>,
    /// Offer permessage-deflate (default: yes).
    pub compression: Option<bool>,
    /// Dirigible's `engine`, accepted inside the options too and ignored.
    pub engine: Option<String>,
}
