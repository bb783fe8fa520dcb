//! Answers the network side waits for from JavaScript: `onUpgrade`'s decision on a connection,
//! the end of an `onStart`/`onTick`/`onStop` call (async ones included), and the outcome of a
//! STOMP session's message.

use std::collections::HashMap;

use deno_core::op2;
use deno_core::OpState;
use tokio::sync::oneshot;

use crate::event::{RequestAnswer, UpgradeDecision};

/// Answers the network side is waiting for from JavaScript (onUpgrade decisions, finished
/// onStart/onTick/onStop calls), by token.
#[derive(Default)]
pub struct PendingAnswers {
    /// The last token given out.
    next_token: u64,
    /// `onUpgrade` decisions not made yet.
    waiting: HashMap<u64, oneshot::Sender<UpgradeDecision>>,
    /// `onStart`/`onTick`/`onStop` calls that have not finished yet.
    services: HashMap<u64, oneshot::Sender<()>>,
    /// STOMP messages whose `onMessage` has not finished yet.
    requests: HashMap<u64, oneshot::Sender<RequestAnswer>>,
}

/// Parks the answer to a STOMP session's message; returns the token JavaScript answers with.
pub fn await_request(state: &mut OpState, answer: oneshot::Sender<RequestAnswer>) -> u64 {
    let pending = state.borrow_mut::<PendingAnswers>();
    pending.next_token += 1;
    let token = pending.next_token;
    pending.requests.insert(token, answer);
    token
}

/// Answers a STOMP message whose `onMessage` was terminated (the JavaScript cannot).
pub fn fail_request(state: &mut OpState, token: u64, error: String) {
    if let Some(answer) = state.borrow_mut::<PendingAnswers>().requests.remove(&token) {
        let _ = answer.send(Err(error));
    }
}

/// `onMessage` for a STOMP message finished: `ok` with its reply (none for undefined/null), or
/// not `ok` with the error's text.
#[op2]
pub fn op_sb_request_answer(
    state: &mut OpState,
    #[number] token: u64,
    ok: bool,
    #[string] text: Option<String>,
) {
    if let Some(answer) = state.borrow_mut::<PendingAnswers>().requests.remove(&token) {
        let _ = answer.send(if ok {
            Ok(text)
        } else {
            Err(text.unwrap_or_default())
        });
    }
}

/// Parks the completion of a service call; returns the token JavaScript finishes it with.
pub fn await_service_call(state: &mut OpState, done: oneshot::Sender<()>) -> u64 {
    let pending = state.borrow_mut::<PendingAnswers>();
    pending.next_token += 1;
    let token = pending.next_token;
    pending.services.insert(token, done);
    token
}

/// `onStart`/`onTick`/`onStop` (sync or async) has finished.
#[op2(fast)]
pub fn op_sb_service_done(state: &mut OpState, #[number] token: u64) {
    if let Some(done) = state.borrow_mut::<PendingAnswers>().services.remove(&token) {
        let _ = done.send(());
    }
}

/// Parks `decision` until the handler answers; returns the token the answer will carry.
pub fn await_upgrade_decision(
    state: &mut OpState,
    decision: oneshot::Sender<UpgradeDecision>,
) -> u64 {
    let pending = state.borrow_mut::<PendingAnswers>();
    pending.next_token += 1;
    let token = pending.next_token;
    pending.waiting.insert(token, decision);
    token
}

/// The handler's answer: `{"decision": "accept", "data": ...}` or
/// `{"decision": "refuse", "status": 403, "reason": "..."}`.
#[op2(fast)]
pub fn op_ws_upgrade_decide(state: &mut OpState, #[number] token: u64, #[string] decision: &str) {
    let Some(waiting) = state.borrow_mut::<PendingAnswers>().waiting.remove(&token) else {
        return;
    };
    let decision = serde_json::from_str(decision).unwrap_or_else(|error| UpgradeDecision::Refuse {
        status: 500,
        reason: format!("onUpgrade's decision could not be read: {error}"),
    });
    let _ = waiting.send(decision);
}
