//! Plain HTTP: the JSON endpoint list and status, the overview the console page starts from, and
//! the projects' static files.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Serialize;

use super::files::FileError;
use super::state::AppState;
use crate::workspace::Problem;

/// One entry of `GET /websockets/v4/service`.
#[derive(Debug, Serialize)]
pub struct EndpointInfo {
    /// The endpoint's name.
    pub endpoint: String,
    /// Its description.
    pub description: String,
    /// Its handler, as the descriptor wrote it (for a `@Websocket` class, its module).
    pub handler: String,
    /// The project folder of the file that declares it.
    pub project: String,
    /// The file that declares it, relative to the workspace: its `*.websocket` descriptor, or
    /// the `*websocket.ts` module of its `@Websocket` class (the key keeps Dirigible's name).
    pub descriptor: String,
    /// The URL path to connect to.
    pub path: String,
    /// Connections open now.
    pub connections: usize,
    /// Why its handler failed to load, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn endpoint_infos(state: &AppState) -> Vec<EndpointInfo> {
    let snapshot = state.runtime.endpoints.snapshot();
    let counts = state.runtime.connections.counts_by_endpoint();
    snapshot
        .endpoints
        .values()
        .map(|e| EndpointInfo {
            endpoint: e.name.clone(),
            description: e.description.clone(),
            handler: e.handler.clone(),
            project: e.project.clone(),
            descriptor: e.declared_in.clone(),
            path: format!("/websockets/v4/service/{}", e.name),
            connections: counts.get(&e.name).copied().unwrap_or(0),
            error: state
                .runtime
                .endpoints
                .handler_error(&e.handler_file)
                .map(|error| error.to_string()),
        })
        .collect()
}

/// `GET /websockets/v4/service`: the endpoints as JSON.
pub async fn endpoint_list(State(state): State<AppState>) -> Json<Vec<EndpointInfo>> {
    Json(endpoint_infos(&state))
}

/// `GET /switchboard/status`: endpoints with their handler errors, and the workspace's problems.
pub async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snapshot = state.runtime.endpoints.snapshot();
    let problems = |list: &[Problem]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|p| serde_json::json!({"file": p.file, "message": p.message}))
            .collect()
    };
    Json(serde_json::json!({
        "endpoints": endpoint_infos(&state),
        "problems": problems(&snapshot.problems),
        "warnings": problems(&snapshot.warnings),
        "isolates": state.runtime.isolates.live_isolates(),
        "reloads": state.runtime.reloads.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// The endpoints, their projects' pages, and the workspace's problems, as static HTML: what the
/// console page shows before its script runs (and all it shows without one).
pub fn overview_html(state: &AppState) -> String {
    let snapshot = state.runtime.endpoints.snapshot();
    let mut page = String::from("<h2>Endpoints</h2>\n");
    let infos = endpoint_infos(state);
    if infos.is_empty() {
        page.push_str(
            "<p>No endpoints: add a <code>*.websocket</code> descriptor, or a \
             <code>*Websocket.ts</code> module with a <code>@Websocket</code> class, to a \
             project (or run <code>switchboard new PROJECT</code>).</p>\n",
        );
    } else {
        page.push_str(
            "<table><tr><th>Endpoint</th><th>URL</th><th>Handler</th><th>Project</th><th>Description</th><th>Open</th></tr>\n",
        );
        for info in &infos {
            let status = match &info.error {
                Some(error) => format!("<br><span class=\"error\">{}</span>", escape(error)),
                None => String::new(),
            };
            page.push_str(&format!(
                "<tr><td>{}{status}</td><td><code>{}</code></td><td>{}</td>\
                 <td><a href=\"/services/web/{}/\">{}</a></td><td>{}</td><td>{}</td></tr>\n",
                escape(&info.endpoint),
                escape(&info.path),
                escape(&info.handler),
                escape(&info.project),
                escape(&info.project),
                escape(&info.description),
                info.connections
            ));
        }
        page.push_str("</table>\n");
    }
    if !snapshot.problems.is_empty() {
        page.push_str("<h2>Problems</h2>\n<ul>\n");
        for problem in &snapshot.problems {
            page.push_str(&format!(
                "<li class=\"error\">{}</li>\n",
                escape(&problem.to_string())
            ));
        }
        page.push_str("</ul>\n");
    }
    page
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// The browser library (runtime_js/client.js).
pub async fn client_library() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../runtime_js/client.js"),
    )
        .into_response()
}

/// Anything else: 404 with the path.
pub async fn not_found(uri: Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("nothing is served at {}", uri.path()),
    )
}

/// `GET /services/web/{project}/`: the project's `index.html` (redirected to the slash form).
pub async fn project_root(
    State(state): State<AppState>,
    Path(project): Path<String>,
    uri: Uri,
) -> Response {
    if !uri.path().ends_with('/') {
        return Redirect::permanent(&format!("{}/", uri.path())).into_response();
    }
    serve_project_file(&state, &project, "").await
}

/// `GET /services/web/{project}/{path}`: a project's static file.
pub async fn static_file(
    State(state): State<AppState>,
    Path((project, path)): Path<(String, String)>,
) -> Response {
    serve_project_file(&state, &project, &path).await
}

/// Serves `path` from the project's folder (a folder's `index.html`). The file is read on every
/// request, so an edit shows at once; the workspace's resolver keeps everything outside the
/// project out of reach, by `..` or by a symbolic link (the index file included).
async fn serve_project_file(state: &AppState, project: &str, path: &str) -> Response {
    let not_found = || {
        text(
            StatusCode::NOT_FOUND,
            format!("no file {path:?} in project {project:?}"),
        )
    };
    let Ok(file) = state.runtime.workspace.project_file(project, path) else {
        return not_found();
    };
    match state.static_files.read(file.clone()).await {
        Ok(bytes) => {
            let mime = mime_guess::from_path(&file).first_or_octet_stream();
            (
                [
                    (
                        header::CONTENT_TYPE,
                        mime.essence_str().to_string() + charset(&mime),
                    ),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                ],
                bytes,
            )
                .into_response()
        }
        Err(FileError::Busy) => text(StatusCode::SERVICE_UNAVAILABLE, FileError::Busy.to_string()),
        Err(FileError::TooLarge(size)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{path:?} in project {project:?}: {}",
                FileError::TooLarge(size)
            ),
        ),
        Err(_) => not_found(),
    }
}

/// `; charset=utf-8` for text types.
fn charset(mime: &mime_guess::Mime) -> &'static str {
    if mime.type_() == mime_guess::mime::TEXT
        || mime.subtype() == "javascript"
        || mime.subtype() == "json"
    {
        "; charset=utf-8"
    } else {
        ""
    }
}
