//! Black-box tests of the `switchboard` binary over real sockets on 127.0.0.1.
//! One test binary, so the project links once for all of them.

mod architecture;
mod browser;
mod check;
mod clients;
mod cluster;
mod compression;
mod conformance;
mod console;
mod control;
mod core;
mod hardening;
mod hostile;
mod instances;
mod live;
mod loading;
mod new_project;
mod stomp;
mod support;
mod tls;
mod typescript;
