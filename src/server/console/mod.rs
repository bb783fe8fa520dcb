//! The web console at `/`: every endpoint live (state, load errors, connections, traffic, errors,
//! event latency), a chart of the last minutes, the reload history, and per endpoint a test
//! client, the handler's log as it is written, and its connections with send and disconnect.
//! The page and its script are ours, served from the binary (`console/` in the repository).
//!
//! - `access`: who may use it (loopback, or a token; `--no-console`).
//! - `activity`: the per-second samples behind the chart and the rates.
//! - `feed`: the live feed (Server-Sent Events) and the state it carries.
//! - here: the routes, the page, and the two actions (send to and disconnect one connection).

pub mod access;
pub mod activity;
mod feed;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_tungstenite::tungstenite::Message;

pub use access::ConsoleAccess;

use access::Refusal;
pub use activity::Activity;

use super::pages::{escape, overview_html};
use super::state::AppState;
use crate::net::close::checked_close;

/// The page: one shell for the overview and every endpoint page (the script reads the path).
const PAGE: &str = include_str!("../../../console/index.html");
/// The page's script.
const SCRIPT: &str = include_str!("../../../console/console.js");
/// The page's style.
const STYLE: &str = include_str!("../../../console/console.css");

/// The console's routes: pages and the feed behind the access rule, actions behind it and the
/// `Origin` check.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(page))
        .route("/console/endpoint/{endpoint}", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/feed", get(live_feed))
        .route("/console/state", get(state_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate));
    let actions = Router::new()
        .route("/console/connections/{id}/send", post(send))
        .route("/console/connections/{id}/disconnect", post(disconnect))
        .route_layer(middleware::from_fn_with_state(state, gate_action));
    pages.merge(actions)
}

/// The `token` of a query string, if any.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// Lets a console request through (see `access`), setting the token's cookie when the token came
/// in the query; starts the sampler with the first console request.
async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let token = query_token(&request);
    match state.console.admit(request.headers(), token.as_deref()) {
        Ok(cookie) => {
            state.activity.start(&state.runtime);
            let mut response = next.run(request).await;
            if let Some(cookie) = cookie {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Lets an action through: the console's rule, and a page of this server (`Origin`).
async fn gate_action(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(refusal) = state.console.admit(request.headers(), None) {
        return refusal.into_response();
    }
    if !access::same_origin(request.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "console actions are accepted only from the console's own page (Origin must be this server)",
        );
    }
    next.run(request).await
}

/// `GET /` and `GET /console/endpoint/{name}`: the page, with the overview rendered in it.
async fn page(State(state): State<AppState>) -> Response {
    let node = state.runtime.connections.this_node();
    let html = PAGE
        .replace("{{OVERVIEW}}", &overview_html(&state))
        .replace("{{NODE}}", &escape(&node.name));
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// An asset of the page.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /console/feed[?endpoint=NAME]`: the live feed.
async fn live_feed(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    feed::feed(
        state.runtime.clone(),
        state.activity.clone(),
        query.get("endpoint").cloned(),
    )
    .into_response()
}

/// `GET /console/state`: what the feed's `state` event carries, once (for scripts and tests).
async fn state_json(State(state): State<AppState>) -> Response {
    Json(feed::state(&state.runtime, &state.activity)).into_response()
}

/// A refusal, as a response.
fn refuse(status: StatusCode, message: &str) -> Response {
    Refusal::new(status, message).into_response()
}

/// What the page sends to a connection: text, or bytes written as hex.
#[derive(Debug, serde::Deserialize)]
struct Outgoing {
    /// A text message.
    text: Option<String>,
    /// A binary message, as hexadecimal digits.
    hex: Option<String>,
}

/// Bytes from hexadecimal digits (spaces allowed).
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// `POST /console/connections/{id}/send` with `{"text": ...}` or `{"hex": ...}`.
async fn send(State(state): State<AppState>, Path(id): Path<u64>, body: Bytes) -> Response {
    let message = match serde_json::from_slice::<Outgoing>(&body) {
        Ok(Outgoing {
            text: Some(text), ..
        }) => Message::text(text),
        Ok(Outgoing { hex: Some(hex), .. }) => match from_hex(&hex) {
            Some(bytes) => Message::binary(bytes),
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "hex: an even number of hexadecimal digits (spaces allowed)",
                )
            }
        },
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the body must be JSON: {\"text\": \"...\"} or {\"hex\": \"48 69\"}",
            )
        }
    };
    match state.runtime.connections.send(id, message) {
        Ok(()) => Json(serde_json::json!({"sent": true})).into_response(),
        Err(error) => refuse(StatusCode::NOT_FOUND, &error.to_string()),
    }
}

/// How the page asks a connection to close.
#[derive(Debug, serde::Deserialize)]
struct Closing {
    /// The close code (1000, or 3000-4999).
    code: u32,
    /// The reason (at most 123 bytes).
    #[serde(default)]
    reason: String,
}

/// `POST /console/connections/{id}/disconnect` with `{"code": 4000, "reason": "..."}`.
async fn disconnect(State(state): State<AppState>, Path(id): Path<u64>, body: Bytes) -> Response {
    let Ok(closing) = serde_json::from_slice::<Closing>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body must be JSON: {\"code\": 4000, \"reason\": \"...\"}",
        );
    };
    let code = match checked_close(closing.code, &closing.reason) {
        Ok(code) => code,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    match state.runtime.connections.close(id, code, closing.reason) {
        Ok(()) => Json(serde_json::json!({"closing": true})).into_response(),
        Err(error) => refuse(StatusCode::NOT_FOUND, &error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_read_with_spaces_and_refused_when_odd_or_not_hex() {
        assert_eq!(from_hex("48 69 ff"), Some(vec![0x48, 0x69, 0xff]));
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(from_hex("486"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
