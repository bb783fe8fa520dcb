//! permessage-deflate (RFC 7692), negotiation: what a client offers in
//! `Sec-WebSocket-Extensions`, what a server answers, and what both then use. A server reads every
//! offer in order and accepts the first valid one it can honour (an offer with an unknown or a
//! repeated parameter, or a window size out of 8-15, is declined as section 5 requires, and the
//! next one is considered); a client checks that the server's answer is one its offer allows
//! (section 7: otherwise it must fail the connection).
//!
//! [`codec`] compresses and inflates the messages themselves (bounded).
//!
//! [`socket`] is what one socket compresses and inflates with once the extension is agreed: a
//! compressor shared by the thread (no context takeover) or one of its own (dedicated).

pub mod codec;
pub mod socket;

/// The extension's name.
pub const EXTENSION: &str = "permessage-deflate";

/// Every `Sec-WebSocket-Extensions` value of a request (the offers) or a response (the answer),
/// in order; values that are not text are left out.
pub fn extension_headers(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> Vec<&str> {
    headers
        .get_all(tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect()
}

/// The largest LZ77 window (2^15 bytes), and the default of both directions.
pub const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window a peer may ask for.
pub const MIN_WINDOW_BITS: u8 = 8;

/// How a side compresses, as configured (the descriptor's `compression`, `serve --compression`).
pub use crate::limits::CompressionMode as Mode;

/// What both sides use once the extension is agreed. "Server" and "client" are the roles of the
/// WebSocket handshake: the server compresses with `server_*`, the client with `client_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server starts every message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty window.
    pub client_no_context_takeover: bool,
    /// The server's window, in bits (8-15).
    pub server_max_window_bits: u8,
    /// The client's window, in bits (8-15).
    pub client_max_window_bits: u8,
}

impl Agreed {
    /// The same agreement with no context takeover either way (a server may always answer so,
    /// RFC 7692 sections 7.1.1.1 and 7.1.1.2): what a dedicated connection gets when the memory
    /// for its windows is used up.
    pub fn without_takeover(self) -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..self
        }
    }
}

/// A window size in bits: `Some(None)` for a parameter given without a value.
type WindowParameter = Option<Option<u8>>;

/// One offer, its parameters read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Offer {
    /// `server_no_context_takeover` was given.
    server_no_context_takeover: bool,
    /// `client_no_context_takeover` was given.
    client_no_context_takeover: bool,
    /// `server_max_window_bits`, with its value.
    server_max_window_bits: WindowParameter,
    /// `client_max_window_bits`, with its value if it had one.
    client_max_window_bits: WindowParameter,
}

/// Why an offer (or an answer) of permessage-deflate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// A parameter RFC 7692 does not define.
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    /// A parameter given twice.
    #[error("parameter {0} given twice")]
    Repeated(&'static str),
    /// A value where none is allowed, or a window size that is not 8-15.
    #[error("parameter {name}: invalid value {value:?} (window sizes are 8 to 15; the no_context_takeover parameters take none)")]
    Value {
        /// The parameter.
        name: &'static str,
        /// What was given.
        value: String,
    },
    /// `server_max_window_bits` without a value.
    #[error("parameter server_max_window_bits needs a value (8 to 15)")]
    Missing,
}

/// One extension of a header value: its name and its parameters (`key`, or `key=value`).
type Extension<'a> = (&'a str, Vec<(&'a str, Option<&'a str>)>);

/// The extensions of a header value: `name; param=value; param, name2` as (name, parameters).
fn extensions(header: &str) -> impl Iterator<Item = Extension<'_>> {
    header.split(',').filter_map(|extension| {
        let mut parts = extension.split(';').map(str::trim);
        let name = parts.next().filter(|n| !n.is_empty())?;
        let parameters = parts
            .filter(|p| !p.is_empty())
            .map(|parameter| match parameter.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim().trim_matches('"'))),
                None => (parameter, None),
            })
            .collect();
        Some((name, parameters))
    })
}

/// A window size value: 8-15, digits only (RFC 7692 section 7.1.2.1).
fn window(name: &'static str, value: &str) -> Result<u8, ParameterError> {
    let invalid = || ParameterError::Value {
        name,
        value: value.to_string(),
    };
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match value.parse::<u8>() {
        Ok(bits) if (MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) => Ok(bits),
        _ => Err(invalid()),
    }
}

/// Reads the parameters of one permessage-deflate offer (or answer).
fn read_offer(parameters: &[(&str, Option<&str>)]) -> Result<Offer, ParameterError> {
    let mut offer = Offer::default();
    for (key, value) in parameters {
        let no_value = |name: &'static str| match value {
            None => Ok(()),
            Some(value) => Err(ParameterError::Value {
                name,
                value: value.to_string(),
            }),
        };
        match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                no_value("server_no_context_takeover")?;
                if std::mem::replace(&mut offer.server_no_context_takeover, true) {
                    return Err(ParameterError::Repeated("server_no_context_takeover"));
                }
            }
            "client_no_context_takeover" => {
                no_value("client_no_context_takeover")?;
                if std::mem::replace(&mut offer.client_no_context_takeover, true) {
                    return Err(ParameterError::Repeated("client_no_context_takeover"));
                }
            }
            "server_max_window_bits" => {
                let bits = match value {
                    Some(value) => window("server_max_window_bits", value)?,
                    None => return Err(ParameterError::Missing),
                };
                if offer.server_max_window_bits.replace(Some(bits)).is_some() {
                    return Err(ParameterError::Repeated("server_max_window_bits"));
                }
            }
            "client_max_window_bits" => {
                let bits = match value {
                    Some(value) => Some(window("client_max_window_bits", value)?),
                    None => None,
                };
                if offer.client_max_window_bits.replace(bits).is_some() {
                    return Err(ParameterError::Repeated("client_max_window_bits"));
                }
            }
            other => return Err(ParameterError::Unknown(other.to_string())),
        }
    }
    Ok(offer)
}

/// The server's choice among a client's offers (every `Sec-WebSocket-Extensions` value, in
/// order): the first valid offer of permessage-deflate, answered as `mode` wants, or `None` (the
/// extension is not used; declined offers are not an error).
pub fn accept(offers: &[&str], mode: Mode) -> Option<Agreed> {
    if mode == Mode::Off {
        return None;
    }
    offers
        .iter()
        .flat_map(|header| extensions(header))
        .filter(|(name, _)| name.eq_ignore_ascii_case(EXTENSION))
        .find_map(|(_, parameters)| {
            let offer = read_offer(&parameters).ok()?;
            answer(&offer, mode)
        })
}

/// How the server answers one valid offer.
fn answer(offer: &Offer, mode: Mode) -> Option<Agreed> {
    let client_offered_bits = offer.client_max_window_bits;
    match mode {
        Mode::Off => None,
        // No context takeover in either direction: asking the client for it too is allowed
        // whether or not it offered (section 7.1.1.2), and lets this side inflate every message
        // with a fresh state that no idle connection holds.
        Mode::Shared => Some(Agreed {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: offer
                .server_max_window_bits
                .flatten()
                .unwrap_or(MAX_WINDOW_BITS),
            // The client's window only matters with takeover; keep what it said it uses.
            client_max_window_bits: client_offered_bits.flatten().unwrap_or(MAX_WINDOW_BITS),
        }),
        Mode::Dedicated { window_bits } => Some(Agreed {
            server_no_context_takeover: offer.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover,
            // Never more than the client allows, never more than configured.
            server_max_window_bits: offer
                .server_max_window_bits
                .flatten()
                .unwrap_or(MAX_WINDOW_BITS)
                .min(window_bits),
            // The client may be asked for a smaller window only if it offered the parameter.
            client_max_window_bits: match client_offered_bits {
                Some(bits) => bits.unwrap_or(MAX_WINDOW_BITS).min(window_bits),
                None => MAX_WINDOW_BITS,
            },
        }),
    }
}

/// The server's `Sec-WebSocket-Extensions` answer for `agreed`. A window is named only when it is
/// smaller than the default, which [`accept`] allows for the client's only when it was offered.
pub fn answer_header(agreed: &Agreed) -> String {
    let mut header = String::from(EXTENSION);
    if agreed.server_no_context_takeover {
        header.push_str("; server_no_context_takeover");
    }
    if agreed.client_no_context_takeover {
        header.push_str("; client_no_context_takeover");
    }
    if agreed.server_max_window_bits < MAX_WINDOW_BITS {
        header.push_str(&format!(
            "; server_max_window_bits={}",
            agreed.server_max_window_bits
        ));
    }
    if agreed.client_max_window_bits < MAX_WINDOW_BITS {
        header.push_str(&format!(
            "; client_max_window_bits={}",
            agreed.client_max_window_bits
        ));
    }
    header
}

/// What a client offers for `mode` (`None` when off). It always says it can use a smaller window
/// of its own (`client_max_window_bits`), which browsers do too.
pub fn offer_header(mode: Mode) -> Option<String> {
    match mode {
        Mode::Off => None,
        Mode::Shared => Some(format!(
            "{EXTENSION}; client_no_context_takeover; server_no_context_takeover; client_max_window_bits"
        )),
        Mode::Dedicated { window_bits } if window_bits < MAX_WINDOW_BITS => Some(format!(
            "{EXTENSION}; client_max_window_bits; server_max_window_bits={window_bits}"
        )),
        Mode::Dedicated { .. } => Some(format!("{EXTENSION}; client_max_window_bits")),
    }
}

/// Why a server's answer cannot be used (the client must then fail the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The answer's parameters are not valid.
    #[error("the server's permessage-deflate answer is not valid: {0}")]
    Parameter(#[from] ParameterError),
    /// The server answered with an extension that was not offered, or with more than one.
    #[error("the server accepted extensions that were not offered: {0}")]
    NotOffered(String),
    /// The server's window is larger than the offer allowed.
    #[error("the server's window ({answered} bits) is larger than offered ({offered} bits)")]
    Window {
        /// What the server answered.
        answered: u8,
        /// What the offer allowed.
        offered: u8,
    },
}

/// A client's check of the server's answer to `offer_header(mode)`: what both use, or `None`
/// when the server declined.
pub fn check_answer(answers: &[&str], mode: Mode) -> Result<Option<Agreed>, AnswerError> {
    let all: Vec<Extension<'_>> = answers.iter().flat_map(|h| extensions(h)).collect();
    if all.is_empty() {
        return Ok(None);
    }
    if mode == Mode::Off
        || all.len() > 1
        || !all
            .iter()
            .all(|(name, _)| name.eq_ignore_ascii_case(EXTENSION))
    {
        let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
        return Err(AnswerError::NotOffered(names.join(", ")));
    }
    let answer = read_offer(&all[0].1)?;
    let offered_server_bits = match mode {
        Mode::Dedicated { window_bits } => window_bits,
        _ => MAX_WINDOW_BITS,
    };
    let server_bits = answer
        .server_max_window_bits
        .flatten()
        .unwrap_or(MAX_WINDOW_BITS);
    if server_bits > offered_server_bits {
        return Err(AnswerError::Window {
            answered: server_bits,
            offered: offered_server_bits,
        });
    }
    Ok(Some(Agreed {
        // What the server does is what it answered: a server that keeps its window although
        // asked not to is still inflated correctly (with a window kept here).
        server_no_context_takeover: answer.server_no_context_takeover,
        // In shared mode this side keeps no context, whether or not the answer repeats it.
        client_no_context_takeover: answer.client_no_context_takeover || mode == Mode::Shared,
        server_max_window_bits: server_bits,
        client_max_window_bits: answer
            .client_max_window_bits
            .flatten()
            .unwrap_or(MAX_WINDOW_BITS),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: Mode = Mode::Shared;

    #[test]
    fn a_browsers_offer_is_accepted_without_context_takeover_in_shared_mode() {
        // What Chromium and Firefox send.
        let agreed = accept(&["permessage-deflate; client_max_window_bits"], SHARED).unwrap();
        assert_eq!(
            agreed,
            Agreed {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            }
        );
        assert_eq!(
            answer_header(&agreed),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(accept(&["permessage-deflate"], Mode::Off), None);
        assert_eq!(accept(&["x-webkit-deflate-frame"], SHARED), None);
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_offer_is_considered() {
        for invalid in [
            "permessage-deflate; unknown_parameter",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=1.5",
            "permessage-deflate; client_no_context_takeover=yes",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        ] {
            assert_eq!(accept(&[invalid], SHARED), None, "{invalid}");
            // Several offers in one header, or several headers: the valid one wins.
            let fallback = format!("{invalid}, permessage-deflate; server_max_window_bits=10");
            let agreed = accept(&[&fallback], Mode::Dedicated { window_bits: 15 }).unwrap();
            assert_eq!(agreed.server_max_window_bits, 10, "{fallback}");
            let agreed = accept(&[invalid, "permessage-deflate"], SHARED);
            assert!(agreed.is_some(), "{invalid}, then a plain offer");
        }
        // A quoted value is a value (section 7.1.2).
        let quoted = accept(
            &["permessage-deflate; server_max_window_bits=\"12\""],
            Mode::Dedicated { window_bits: 15 },
        );
        assert_eq!(quoted.unwrap().server_max_window_bits, 12);
    }

    #[test]
    fn dedicated_mode_keeps_context_and_never_exceeds_either_window() {
        let mode = Mode::Dedicated { window_bits: 12 };
        let agreed = accept(
            &["permessage-deflate; client_max_window_bits=14; server_max_window_bits=13"],
            mode,
        )
        .unwrap();
        assert_eq!(
            agreed,
            Agreed {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 12,
                client_max_window_bits: 12,
            }
        );
        assert_eq!(
            answer_header(&agreed),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        );
        // Without client_max_window_bits in the offer, the answer must not name it.
        let agreed = accept(&["permessage-deflate"], mode).unwrap();
        assert_eq!(agreed.client_max_window_bits, 15);
        assert!(!answer_header(&agreed).contains("client_max_window_bits"));
        // What the client asked for itself is kept.
        let agreed = accept(
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            Mode::Dedicated { window_bits: 15 },
        )
        .unwrap();
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
    }

    #[test]
    fn a_client_offers_then_checks_what_the_server_answered() {
        assert_eq!(offer_header(Mode::Off), None);
        let shared = offer_header(SHARED).unwrap();
        assert!(shared.starts_with("permessage-deflate; client_no_context_takeover"));
        // The server's answer to our own offer, as our server would give it.
        let agreed = accept(&[&shared], SHARED).unwrap();
        let checked = check_answer(&[&answer_header(&agreed)], SHARED).unwrap();
        assert_eq!(checked, Some(agreed));
        assert_eq!(check_answer(&[], SHARED), Ok(None));
        assert!(matches!(
            check_answer(&["x-other"], SHARED),
            Err(AnswerError::NotOffered(_))
        ));
        assert!(matches!(
            check_answer(&["permessage-deflate, permessage-deflate"], SHARED),
            Err(AnswerError::NotOffered(_))
        ));
        assert!(matches!(
            check_answer(&["permessage-deflate; bogus"], SHARED),
            Err(AnswerError::Parameter(ParameterError::Unknown(_)))
        ));
        let dedicated = Mode::Dedicated { window_bits: 10 };
        assert_eq!(
            offer_header(dedicated).unwrap(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
        );
        assert_eq!(
            check_answer(
                &["permessage-deflate; server_max_window_bits=12"],
                dedicated
            ),
            Err(AnswerError::Window {
                answered: 12,
                offered: 10
            })
        );
        let agreed = check_answer(
            &["permessage-deflate; server_max_window_bits=9; client_max_window_bits=11"],
            dedicated,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (agreed.server_max_window_bits, agreed.client_max_window_bits),
            (9, 11)
        );
    }
}
