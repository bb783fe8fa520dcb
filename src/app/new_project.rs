//! `switchboard new PROJECT [--endpoint NAME] [--ts]`: a working project from a template, in the
//! workspace: a descriptor and a handler with every event (or, with `--ts`, a decorated
//! TypeScript endpoint with the API's type declarations), and a page that talks to it with the
//! browser library. A running `serve` picks it up live. Nothing that exists is overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::types::{TSCONFIG, TYPE_DECLARATIONS, TYPE_DECLARATIONS_FILE};
use crate::workspace::{self, descriptor::is_valid_endpoint, WorkspacePaths};

/// The JavaScript handler.
const HANDLER_JS: &str = include_str!("../../templates/new/handler.js");
/// Its descriptor.
const DESCRIPTOR: &str = include_str!("../../templates/new/descriptor.websocket");
/// The decorated TypeScript endpoint (`--ts`).
const DECORATED_TS: &str = include_str!("../../templates/new/Websocket.ts");
/// The page.
const PAGE: &str = include_str!("../../templates/new/index.html");

/// What `new` makes.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// The project folder's name, in the workspace.
    pub project: String,
    /// The endpoint's name (default: the project's).
    pub endpoint: Option<String>,
    /// A decorated TypeScript endpoint instead of a descriptor and a JavaScript handler.
    pub typescript: bool,
}

/// `my-chat` -> `MyChat`: the class name of a decorated endpoint.
fn class_name(endpoint: &str) -> String {
    let mut name = String::new();
    for part in endpoint.split(['-', '_', '.']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, 'E');
    }
    name + "Websocket"
}

/// Whether `name` can be a project folder: a plain name, not hidden.
fn is_valid_project(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Creates the project; returns the files written, in the order written.
pub fn new_project(workspace: &Path, options: &NewProject) -> anyhow::Result<Vec<PathBuf>> {
    let paths = WorkspacePaths::new(workspace)?;
    let project = &options.project;
    if !is_valid_project(project) {
        bail!(
            "{project:?} cannot be a project name: use letters, digits, '-', '_' and '.', not \
             starting with '.'"
        );
    }
    let endpoint = options.endpoint.as_deref().unwrap_or(project);
    if !is_valid_endpoint(endpoint) {
        bail!("{endpoint:?} cannot be an endpoint name: use letters, digits, '-', '_' and '.'");
    }
    // An endpoint name is unique in the workspace: say where it is declared already.
    let scan = workspace::scan(&paths);
    if let Some(existing) = scan.endpoints.get(endpoint) {
        bail!(
            "endpoint {endpoint:?} exists already, declared in {}: choose another with --endpoint",
            existing.declared_in
        );
    }
    let folder = paths.root().join(project);
    let class = class_name(endpoint);
    let fill = |template: &str| {
        template
            .replace("{{project}}", project)
            .replace("{{endpoint}}", endpoint)
            .replace("{{class}}", &class)
    };
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if options.typescript {
        files.push((folder.join(format!("{class}.ts")), fill(DECORATED_TS)));
    } else {
        files.push((
            folder.join(format!("{endpoint}.websocket")),
            fill(DESCRIPTOR),
        ));
        files.push((
            folder.join(format!("{endpoint}-handler.js")),
            fill(HANDLER_JS),
        ));
    }
    files.push((folder.join("index.html"), fill(PAGE)));
    // The API's declarations and a tsconfig.json for the editor, unless the project has its own.
    let mut optional: Vec<(PathBuf, String)> = Vec::new();
    if options.typescript {
        optional.push((
            folder.join(TYPE_DECLARATIONS_FILE),
            TYPE_DECLARATIONS.to_string(),
        ));
        optional.push((folder.join("tsconfig.json"), TSCONFIG.to_string()));
    }
    if let Some((existing, _)) = files.iter().find(|(file, _)| file.exists()) {
        bail!(
            "{} exists already: switchboard new never overwrites a file (choose another project or \
             --endpoint)",
            existing.display()
        );
    }
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let mut written = Vec::new();
    // The page and support files first, the declaring file last: a watching `serve` then loads
    // the endpoint once, complete.
    files.rotate_left(if options.typescript { 1 } else { 2 });
    for (file, text) in optional.into_iter().filter(|(file, _)| !file.exists()) {
        write_new(&file, &text)?;
        written.push(file);
    }
    for (file, text) in files {
        write_new(&file, &text)?;
        written.push(file);
    }
    Ok(written)
}

/// Writes a file that must not exist yet (created atomically as new, so a file that appeared
/// since the check is not overwritten either).
fn write_new(file: &Path, text: &str) -> anyhow::Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_come_from_endpoint_names() {
        assert_eq!(class_name("my-chat"), "MyChatWebsocket");
        assert_eq!(class_name("orders"), "OrdersWebsocket");
        assert_eq!(class_name("9lives"), "E9livesWebsocket");
        assert!(is_valid_project("my-chat"));
        assert!(!is_valid_project(".hidden") && !is_valid_project("a/b") && !is_valid_project(""));
    }
}
