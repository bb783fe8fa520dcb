//! Who may use the console: it is an administration surface (it shows every connection, streams
//! handlers' logs, and can send to and close any connection). On a loopback listener it is on by
//! default; on any other address it is off unless a token is set, and then every console request
//! and the live feed need it. `--no-console` turns it off everywhere.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The cookie that carries the token once a page was opened with `?token=`.
pub const COOKIE: &str = "switchboard_console";

/// The console's access rule, fixed when the server starts.
#[derive(Debug, Clone)]
pub struct ConsoleAccess {
    /// Whether the console is served at all.
    pub enabled: bool,
    /// The token every console request must carry, if one is set.
    pub token: Option<String>,
    /// Why it is off (for the page that says so).
    pub why_off: String,
}

impl Default for ConsoleAccess {
    /// On, without a token (a server on loopback).
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            why_off: String::new(),
        }
    }
}

impl ConsoleAccess {
    /// The rule for a server listening on `address`.
    pub fn for_listener(address: SocketAddr, token: Option<String>, disabled: bool) -> Self {
        let token = token.filter(|t| !t.is_empty());
        let (enabled, why_off) = if disabled {
            (false, "the console is off (serve --no-console)".to_string())
        } else if token.is_none() && !address.ip().is_loopback() {
            (
                false,
                format!(
                    "the console is off: the server listens on {address}, not only on loopback, and \
                     no token is set (serve --console-token TOKEN, or SWITCHBOARD_CONSOLE_TOKEN)"
                ),
            )
        } else {
            (true, String::new())
        };
        Self {
            enabled,
            token,
            why_off,
        }
    }

    /// Whether a request may use the console: `Ok` with a cookie to set when the token came in
    /// the query, or the refusal to send.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Option<HeaderValue>, Refusal> {
        if !self.enabled {
            return Err(Refusal::new(StatusCode::NOT_FOUND, &self.why_off));
        }
        let Some(token) = &self.token else {
            return Ok(None);
        };
        if query_token.is_some_and(|given| same(given, token)) {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            return Ok(HeaderValue::from_str(&cookie).ok());
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .next();
        if bearer.or(cookie).is_some_and(|given| same(given, token)) {
            return Ok(None);
        }
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the console needs its token: open /?token=TOKEN (the token given to serve \
             --console-token), or send Authorization: Bearer TOKEN",
        ))
    }
}

/// Compares in time independent of where the strings differ.
fn same(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a state-changing request comes from a page of this server: its `Origin` must name
/// the host it was sent to (another site's page cannot disconnect connections through a
/// browser that can reach the console).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        _ => false,
    }
}

/// Why a console request is refused: a status and a plain-text reason.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    status: StatusCode,
    /// The reason, as the body.
    message: String,
}

impl Refusal {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn loopback_is_open_other_addresses_need_a_token_and_the_token_is_checked() {
        let loopback = ConsoleAccess::for_listener("127.0.0.1:8080".parse().unwrap(), None, false);
        assert!(loopback.admit(&HeaderMap::new(), None).is_ok());
        let public = ConsoleAccess::for_listener("0.0.0.0:8080".parse().unwrap(), None, false);
        let refused = public.admit(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_FOUND);
        let off = ConsoleAccess::for_listener("127.0.0.1:1".parse().unwrap(), None, true);
        assert!(off.admit(&HeaderMap::new(), None).is_err());

        let guarded =
            ConsoleAccess::for_listener("0.0.0.0:8080".parse().unwrap(), Some("s3".into()), false);
        assert_eq!(
            guarded.admit(&HeaderMap::new(), None).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(guarded
            .admit(&HeaderMap::new(), Some("s3"))
            .unwrap()
            .is_some());
        assert!(guarded.admit(&HeaderMap::new(), Some("s4")).is_err());
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer s3")]);
        assert_eq!(guarded.admit(&bearer, None).unwrap(), None);
        let cookie = headers(&[(header::COOKIE, "a=b; switchboard_console=s3")]);
        assert!(guarded.admit(&cookie, None).is_ok());
        let wrong = headers(&[(header::COOKIE, "switchboard_console=s")]);
        assert!(guarded.admit(&wrong, None).is_err());
    }

    #[test]
    fn actions_need_an_origin_of_the_same_host() {
        let ok = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok));
        let other = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!same_origin(&other));
        assert!(!same_origin(&headers(&[(header::HOST, "127.0.0.1:8080")])));
    }
}
