//! The routes: what is served at which URL.

use axum::routing::get;
use axum::Router;

use super::state::AppState;
use super::{console, metrics, pages, stomp, upgrade};

/// The routes: WebSocket upgrades at Dirigible's paths, listings, and project pages.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(console::routes(state.clone()))
        .route("/metrics", get(metrics::metrics))
        .route("/switchboard/status", get(pages::status))
        .route("/switchboard/client.js", get(pages::client_library))
        .route("/websockets/v4/service", get(pages::endpoint_list))
        .route("/websockets/v4/service/", get(pages::endpoint_list))
        .route("/websockets/v4/service/{endpoint}", get(upgrade::upgrade))
        .route("/websockets/service/{endpoint}", get(upgrade::upgrade))
        .route("/stomp", get(stomp::upgrade))
        .route("/stomp/info", get(stomp::sockjs_info))
        .route(
            "/stomp/{server}/{session}/websocket",
            get(stomp::sockjs_upgrade),
        )
        .route(
            "/webjars/stomp__stompjs/esm6/index.js",
            get(stomp::client_library),
        )
        .route("/switchboard/stomp.js", get(stomp::client_library))
        .route("/services/web/{project}", get(pages::project_root))
        .route("/services/web/{project}/", get(pages::project_root))
        .route("/services/web/{project}/{*path}", get(pages::static_file))
        .fallback(pages::not_found)
        .with_state(state)
}
