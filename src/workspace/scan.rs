//! Scanning the workspace: every `*.websocket` descriptor below the root, validated, as the
//! endpoints to serve and the problems found on the way.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::descriptor::{parse_descriptor, DescriptorError};
use super::endpoint::{Endpoint, Problem};
use super::paths::WorkspacePaths;

/// The file extension that marks a descriptor.
pub const DESCRIPTOR_EXTENSION: &str = "websocket";

/// The result of scanning a workspace.
#[derive(Debug, Default, Clone)]
pub struct WorkspaceScan {
    /// Endpoints by name, each defined by exactly one valid descriptor.
    pub endpoints: BTreeMap<String, Arc<Endpoint>>,
    /// Descriptors skipped, with the reason.
    pub problems: Vec<Problem>,
    /// Remarks that did not stop a descriptor from serving (unknown fields).
    pub warnings: Vec<Problem>,
    /// Distinct `engine` values seen, so their meaning can be logged once.
    pub engines: Vec<String>,
}

/// Finds every descriptor in the workspace and validates it.
pub fn scan(paths: &WorkspacePaths) -> WorkspaceScan {
    let mut scan = WorkspaceScan::default();
    let mut defined_by: BTreeMap<String, String> = BTreeMap::new();
    let mut engines = HashSet::new();
    for file in descriptor_files(paths, &mut scan.problems) {
        let shown = paths.display(&file);
        let Some(project) = paths.project_of(&file) else {
            scan.problems.push(Problem {
                file: shown,
                message: "descriptor is not inside a project folder: move it into a top-level folder of the workspace"
                    .into(),
            });
            continue;
        };
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| DescriptorError::Unreadable(e.to_string()))
            .and_then(|text| parse_descriptor(&text, paths));
        let descriptor = match parsed {
            Ok(descriptor) => descriptor,
            Err(error) => {
                scan.problems.push(Problem {
                    file: shown,
                    message: error.to_string(),
                });
                continue;
            }
        };
        for warning in &descriptor.warnings {
            scan.warnings.push(Problem {
                file: shown.clone(),
                message: warning.clone(),
            });
        }
        if let Some(first) = defined_by.get(&descriptor.endpoint) {
            scan.problems.push(Problem {
                file: shown.clone(),
                message: format!(
                    "duplicate endpoint \"{}\": already defined by {first}; this descriptor is skipped",
                    descriptor.endpoint
                ),
            });
            continue;
        }
        if let Some(engine) = &descriptor.engine {
            if engines.insert(engine.clone()) {
                scan.engines.push(engine.clone());
            }
        }
        defined_by.insert(descriptor.endpoint.clone(), shown.clone());
        scan.endpoints.insert(
            descriptor.endpoint.clone(),
            Arc::new(Endpoint {
                name: descriptor.endpoint,
                project,
                descriptor_file: shown,
                handler: descriptor.handler,
                handler_file: descriptor.handler_file,
                description: descriptor.description,
                options: descriptor.options,
            }),
        );
    }
    scan
}

/// Every `*.websocket` file of the workspace, in a stable order, skipping hidden folders.
fn descriptor_files(paths: &WorkspacePaths, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(paths.root())
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in walker {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                if path
                    .extension()
                    .is_none_or(|ext| ext != DESCRIPTOR_EXTENSION)
                {
                    continue;
                }
                let kind = entry.file_type();
                let not_read = if kind.is_file() {
                    files.push(path.to_path_buf());
                    continue;
                } else if kind.is_symlink() {
                    "is a symbolic link: descriptors must be regular files (links are not \
                     followed, so that nothing outside the workspace is read); copy the file here"
                } else if kind.is_dir() {
                    "is a folder: descriptors must be regular files"
                } else {
                    "is not a regular file (a FIFO, socket or device): descriptors must be \
                     regular files"
                };
                problems.push(Problem {
                    file: paths.display(path),
                    message: not_read.into(),
                });
            }
            Err(error) => problems.push(Problem {
                file: error
                    .path()
                    .map(|p| paths.display(p))
                    .unwrap_or_else(|| ".".into()),
                message: format!("cannot be read: {error}"),
            }),
        }
    }
    files
}

/// Hidden folders and `node_modules` hold no descriptors of the user's.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.')) || name == "node_modules"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reports_duplicates_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b/deep")).unwrap();
        std::fs::write(root.join("a/h.js"), "").unwrap();
        std::fs::write(
            root.join("a/one.websocket"),
            r#"{"handler":"a/h","endpoint":"x"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("b/deep/two.websocket"),
            r#"{"handler":"a/h","endpoint":"x"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("stray.websocket"),
            r#"{"handler":"a/h","endpoint":"y"}"#,
        )
        .unwrap();
        let scan = scan(&WorkspacePaths::new(&root).unwrap());
        assert_eq!(scan.endpoints.len(), 1);
        assert_eq!(scan.endpoints["x"].descriptor_file, "a/one.websocket");
        assert_eq!(scan.endpoints["x"].project, "a");
        let problems: Vec<String> = scan.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            vec![
                "b/deep/two.websocket: duplicate endpoint \"x\": already defined by a/one.websocket; this descriptor is skipped",
                "stray.websocket: descriptor is not inside a project folder: move it into a top-level folder of the workspace",
            ]
        );
    }
}
