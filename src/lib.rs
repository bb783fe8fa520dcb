//! Switchboard: a scriptable WebSocket integration runtime.
//!
//! The map of the crate, one layer per line, lowest first. The import rule: a module imports only
//! from its own layer's files below it and from lower layers; only `isolate` names deno_core.
//! `tests/integration/architecture.rs` checks both on every test run.
//!
//! | layer | modules | what it owns |
//! | --- | --- | --- |
//! | 0 | [`event`], [`limits`], [`stats`], [`memory`], [`logbook`] | the vocabulary the layers share; limits; counters; the process's memory; handlers' recent log lines |
//! | 1 | [`workspace`] | files: scan, descriptors, the one path resolver, the registry, the watcher |
//! | 1 | [`net`] | sockets and frames: pump, outbox, direct writes, connections, clients (no engine) |
//! | 2 | [`isolate::ops`] | the ops behind the JavaScript API |
//! | 2 | [`cluster`] | several nodes through a broker (Redis): the registry's remote side |
//! | 3 | [`isolate`] | everything deno_core: host, slot, runtime loop, dispatch, load, module loader |
//! | 4 | [`endpoints`] | an endpoint's life over time: lifecycle, reloader; the running [`endpoints::Runtime`] |
//! | 5 | [`server`] | accept loop, routing, upgrades, pages, metrics, TLS, shutdown |
//! | 6 | [`app`] | the `serve`, `run` and `check` commands, wiring the layers |
//!
//! An incoming message: [`net::pump`] reads it and delivers an [`event::IsolateEvent`] to the
//! handler's [`isolate::HandlerSlot`]; the isolate's thread (`isolate::runtime`) dispatches it
//! into JavaScript (`isolate::dispatch`); the reply goes to [`net::connections`], whose
//! [`net::outbox`] writes it (or [`net::direct`] writes it at once). A file change:
//! [`workspace::watch`] reports it, [`endpoints::reloader`] rescans ([`workspace::scan`]) and
//! reloads ([`isolate::host`]).

// Every `unsafe` block says, in a SAFETY comment, why it is sound and where that is upheld.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod cluster;
pub mod endpoints;
pub mod event;
pub mod isolate;
pub mod limits;
pub mod logbook;
pub mod memory;
pub mod net;
pub mod server;
pub mod stats;
pub mod workspace;
