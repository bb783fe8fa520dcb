//! Scanning the workspace: every `*.websocket` descriptor and every `@Websocket` class of a
//! `*websocket.ts` module below the root, validated, as the endpoints to serve and the problems
//! found on the way.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::decorated::{declarations, may_declare_endpoints};
use super::descriptor::{parse_descriptor, DescriptorError, OPTION_FIELDS};
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

/// Finds every endpoint the workspace declares and validates it.
pub fn scan(paths: &WorkspacePaths) -> WorkspaceScan {
    let mut scan = Scanner {
        paths,
        scan: WorkspaceScan::default(),
        declared_by: BTreeMap::new(),
        engines: HashSet::new(),
    };
    for file in declaring_files(paths, &mut scan.scan.problems, &mut scan.scan.warnings) {
        match file {
            DeclaringFile::Descriptor(path) => scan.descriptor(&path),
            DeclaringFile::Module(path) => scan.module(&path),
        }
    }
    scan.scan
}

/// A scan under way.
struct Scanner<'a> {
    /// The workspace.
    paths: &'a WorkspacePaths,
    /// What was found so far.
    scan: WorkspaceScan,
    /// Which file declared each endpoint found so far, for duplicates.
    declared_by: BTreeMap<String, String>,
    /// `engine` values seen so far.
    engines: HashSet<String>,
}

impl Scanner<'_> {
    fn problem(&mut self, file: &str, message: String) {
        self.scan.problems.push(Problem {
            file: file.to_string(),
            message,
        });
    }

    /// The project a declaring file belongs to, or a problem if it is in none.
    fn project(&mut self, file: &Path, shown: &str, what: &str) -> Option<String> {
        let project = self.paths.project_of(file);
        if project.is_none() {
            self.problem(
                shown,
                format!("{what} is not inside a project folder: move it into a top-level folder of the workspace"),
            );
        }
        project
    }

    /// Adds an endpoint, unless an earlier file declared the same name.
    fn add(&mut self, endpoint: Endpoint, skipped: &str) {
        if let Some(first) = self.declared_by.get(&endpoint.name) {
            let message = format!(
                "duplicate endpoint \"{}\": already defined by {first}; this {skipped} is skipped",
                endpoint.name
            );
            self.problem(&endpoint.declared_in.clone(), message);
            return;
        }
        self.declared_by
            .insert(endpoint.name.clone(), endpoint.declared_in.clone());
        self.scan
            .endpoints
            .insert(endpoint.name.clone(), Arc::new(endpoint));
    }

    /// A `*.websocket` descriptor.
    fn descriptor(&mut self, file: &Path) {
        let shown = self.paths.display(file);
        let Some(project) = self.project(file, &shown, "descriptor") else {
            return;
        };
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| DescriptorError::Unreadable(e.to_string()))
            .and_then(|text| parse_descriptor(&text, self.paths));
        let descriptor = match parsed {
            Ok(descriptor) => descriptor,
            Err(error) => return self.problem(&shown, error.to_string()),
        };
        for warning in &descriptor.warnings {
            self.scan.warnings.push(Problem {
                file: shown.clone(),
                message: warning.clone(),
            });
        }
        if !self.declared_by.contains_key(&descriptor.endpoint) {
            if let Some(engine) = &descriptor.engine {
                if self.engines.insert(engine.clone()) {
                    self.scan.engines.push(engine.clone());
                }
            }
        }
        self.add(
            Endpoint {
                name: descriptor.endpoint,
                project,
                declared_in: shown,
                handler: descriptor.handler,
                handler_file: descriptor.handler_file,
                description: descriptor.description,
                options: descriptor.options,
            },
            "descriptor",
        );
    }

    /// A `*websocket.ts` module: each `@Websocket` class in it declares an endpoint whose handler
    /// is the module itself. A module without one is no endpoint, and no problem.
    fn module(&mut self, file: &Path) {
        let shown = self.paths.display(file);
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                // Only a module that declares an endpoint is the scan's business.
                if error.kind() != std::io::ErrorKind::InvalidData {
                    self.problem(&shown, format!("cannot read the file: {error}"));
                }
                return;
            }
        };
        let found = declarations(&text);
        if found.is_empty() {
            return;
        }
        let Some(project) = self.project(file, &shown, "a module declaring @Websocket endpoints")
        else {
            return;
        };
        // The walk does not follow links, and the root is canonical: so is the file.
        let handler_file = file.to_path_buf();
        for declaration in found {
            let declaration = match declaration {
                Ok(declaration) => declaration,
                Err(error) => {
                    self.problem(
                        &format!("{shown}:{}:{}", error.line, error.column),
                        error.message,
                    );
                    continue;
                }
            };
            for option in &declaration.unknown_options {
                self.scan.warnings.push(Problem {
                    file: shown.clone(),
                    message: format!(
                        "@Websocket option \"{option}\" ignored (known: name, endpoint, description, {})",
                        OPTION_FIELDS.join(", ")
                    ),
                });
            }
            self.add(
                Endpoint {
                    name: declaration.endpoint,
                    project: project.clone(),
                    declared_in: shown.clone(),
                    handler: shown.clone(),
                    handler_file: handler_file.clone(),
                    description: declaration
                        .description
                        .or(declaration.name)
                        .unwrap_or_default(),
                    options: declaration.options,
                },
                "@Websocket declaration",
            );
        }
    }
}

/// A file that may declare endpoints.
enum DeclaringFile {
    /// A `*.websocket` descriptor.
    Descriptor(PathBuf),
    /// A `*websocket.ts` module, which may hold `@Websocket` classes.
    Module(PathBuf),
}

/// Every `*.websocket` and `*websocket.ts` file of the workspace, in a stable order, skipping
/// hidden folders.
fn declaring_files(
    paths: &WorkspacePaths,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<DeclaringFile> {
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(paths.root())
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_hidden(entry.file_name()));
    for entry in walker {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let kind = entry.file_type();
                if may_declare_endpoints(path) {
                    if kind.is_file() {
                        files.push(DeclaringFile::Module(path.to_path_buf()));
                    } else if kind.is_symlink() {
                        warnings.push(Problem {
                            file: paths.display(path),
                            message: "is a symbolic link: @Websocket endpoints are read from \
                                      regular files only (links are not followed)"
                                .into(),
                        });
                    }
                    continue;
                }
                if path
                    .extension()
                    .is_none_or(|ext| ext != DESCRIPTOR_EXTENSION)
                {
                    continue;
                }
                let not_read = if kind.is_file() {
                    files.push(DeclaringFile::Descriptor(path.to_path_buf()));
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
        assert_eq!(scan.endpoints["x"].declared_in, "a/one.websocket");
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
