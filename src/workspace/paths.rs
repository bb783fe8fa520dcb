//! The one path resolver of the workspace. Every file Switchboard opens on a user's behalf is
//! found here: a descriptor's handler ([`WorkspacePaths::handler`]), a module a handler imports
//! or requires ([`WorkspacePaths::module`]), a project's static file
//! ([`WorkspacePaths::project_file`]).
//! Each kind has its own way of naming files, but every one passes the same checks in
//! [`WorkspacePaths::find`]: the name, taken from its starting folder with `.` and `..` removed,
//! stays inside its boundary (the workspace, or the project for static files); and the file found
//! (after the extensions or index files that kind tries) is, once symbolic links are followed,
//! still inside it. Nothing is opened before both checks pass.

use std::path::{Component, Path, PathBuf};

/// Errors that make a folder unusable as a workspace (per-file trouble is a [`Problem`] instead).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The folder could not be read.
    #[error("workspace {path} cannot be read")]
    Unreadable {
        /// The folder as given.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// It is a file, not a folder.
    #[error("workspace {0} is not a directory")]
    NotADirectory(String),
}

/// Extensions tried, in order, when a descriptor's `handler` has none.
pub const HANDLER_EXTENSIONS: &[&str] = &["js", "mjs", "cjs", "ts", "mts", "cts"];

/// Extensions tried, in order, after a module specifier's own name (`./a` -> `./a.js`, ...).
pub const MODULE_EXTENSIONS: &[&str] = &["js", "mjs", "cjs", "ts", "mts", "cts", "json"];

/// Index files tried in a folder a module specifier names.
pub const MODULE_INDEX_FILES: &[&str] = &["index.js", "index.mjs", "index.ts", "index.mts"];

/// The index file served for a project folder.
pub const PAGE_INDEX_FILE: &str = "index.html";

/// Why no file was found for a name. Callers put it in their own words (a descriptor problem, an
/// import error, a 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is an absolute path.
    #[error("absolute paths are not allowed")]
    Absolute,
    /// The name has a `..` component where none is allowed (descriptor handlers, static files).
    #[error("\"..\" is not allowed")]
    ParentComponent,
    /// The name climbs out of its boundary.
    #[error("it leaves its folder")]
    LeavesBoundary,
    /// A module specifier's first segment is not a project folder.
    #[error("no project {0:?}")]
    NoProject(String),
    /// None of the candidate files exists.
    #[error("no file {}", base.display())]
    NotFound {
        /// The name, without the extensions tried.
        base: PathBuf,
        /// Every candidate tried, in order.
        tried: Vec<PathBuf>,
    },
    /// The file found is a symbolic link (or under one) that leads out of the boundary.
    #[error("{link} is a link to {}, outside", target.display())]
    LinkOut {
        /// The file found, relative to the workspace.
        link: String,
        /// Where it leads.
        target: PathBuf,
    },
    /// The file found could not be resolved to its canonical path.
    #[error("{path}: {reason}")]
    Unresolvable {
        /// The file found, relative to the workspace.
        path: String,
        /// The operating system's words.
        reason: String,
    },
}

/// The workspace root (canonical), and the way to every file in it.
#[derive(Debug, Clone)]
pub struct WorkspacePaths {
    /// The workspace folder, canonical, so that every containment check compares like with like.
    root: PathBuf,
}

impl WorkspacePaths {
    /// The workspace at `root`, which must be a folder.
    pub fn new(root: &Path) -> Result<Self, WorkspaceError> {
        let canonical = root
            .canonicalize()
            .map_err(|source| WorkspaceError::Unreadable {
                path: root.display().to_string(),
                source,
            })?;
        if !canonical.is_dir() {
            return Err(WorkspaceError::NotADirectory(root.display().to_string()));
        }
        Ok(Self { root: canonical })
    }

    /// The workspace folder, canonical.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `file` relative to the workspace, with `/` separators, for messages.
    pub fn display(&self, file: &Path) -> String {
        file.strip_prefix(&self.root)
            .unwrap_or(file)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The top-level folder containing `file`, if `file` is below one.
    pub fn project_of(&self, file: &Path) -> Option<String> {
        let relative = file.strip_prefix(&self.root).ok()?;
        let mut components = relative.components();
        let first = components.next()?;
        components.next()?;
        Some(first.as_os_str().to_string_lossy().into_owned())
    }

    /// A descriptor's `handler` (`project/dir/module`, from the workspace root, extension
    /// optional: [`HANDLER_EXTENSIONS`] are tried): its canonical file.
    pub fn handler(&self, handler: &str) -> Result<PathBuf, PathError> {
        if handler.is_empty() {
            return Err(PathError::Empty);
        }
        let relative = plain_relative(handler)?;
        let base = self.root.join(relative);
        let extensions: &[&str] = if relative.extension().is_none() {
            HANDLER_EXTENSIONS
        } else {
            &[]
        };
        let candidates = with_extensions(&base, extensions, ExtensionStyle::Replace);
        self.find(&self.root, &base, candidates)
    }

    /// The module `specifier` as imported by the module file `importer` (`None`: from the
    /// workspace root): `./x` and `../x` from the importer's folder, `project/x` from the
    /// workspace root. [`MODULE_EXTENSIONS`] are tried after the name, then the
    /// [`MODULE_INDEX_FILES`] of a folder.
    pub fn module(&self, specifier: &str, importer: Option<&Path>) -> Result<PathBuf, PathError> {
        let base = if specifier.starts_with("./") || specifier.starts_with("../") {
            let folder = importer
                .and_then(Path::parent)
                .unwrap_or(self.root.as_path());
            folder.join(specifier)
        } else if specifier.starts_with('/') || specifier.starts_with('\\') {
            return Err(PathError::Absolute);
        } else {
            let project = specifier.split('/').next().unwrap_or_default();
            if project.is_empty() || project == ".." || !self.root.join(project).is_dir() {
                return Err(PathError::NoProject(project.to_string()));
            }
            self.root.join(specifier)
        };
        self.module_at(&base)
    }

    /// The module at the absolute path `path` (a `file:` URL an importer named).
    pub fn module_at(&self, path: &Path) -> Result<PathBuf, PathError> {
        let mut candidates = with_extensions(path, MODULE_EXTENSIONS, ExtensionStyle::Append);
        candidates.extend(MODULE_INDEX_FILES.iter().map(|index| path.join(index)));
        self.find(&self.root, path, candidates)
    }

    /// The static file `path` of project `project` (a folder's [`PAGE_INDEX_FILE`] for a
    /// folder); nothing outside the project's folder.
    pub fn project_file(&self, project: &str, path: &str) -> Result<PathBuf, PathError> {
        let project_name = plain_relative(project)?;
        if project_name.components().count() != 1 {
            return Err(PathError::NoProject(project.to_string()));
        }
        let relative = if path.is_empty() {
            Path::new("")
        } else {
            plain_relative(path)?
        };
        let project_dir = self
            .find(&self.root, &self.root.join(project_name), Vec::new())
            .ok()
            .filter(|dir| dir.is_dir() && *dir != self.root)
            .ok_or_else(|| PathError::NoProject(project.to_string()))?;
        let base = project_dir.join(relative);
        let index = base.join(PAGE_INDEX_FILE);
        self.find(&project_dir, &base, vec![base.clone(), index])
    }

    /// The checks every lookup passes. `base` (absolute) must stay inside `boundary` once `.`
    /// and `..` are removed; the first of `candidates` that is a file is the one (with no
    /// candidates, `base` itself, file or folder); its canonical path must be inside `boundary`
    /// too, so a symbolic link cannot lead out.
    fn find(
        &self,
        boundary: &Path,
        base: &Path,
        candidates: Vec<PathBuf>,
    ) -> Result<PathBuf, PathError> {
        let base = normalize(base);
        if !base.starts_with(boundary) {
            return Err(PathError::LeavesBoundary);
        }
        let found = if candidates.is_empty() {
            base.exists().then(|| base.clone())
        } else {
            candidates
                .iter()
                .map(|candidate| normalize(candidate))
                .find(|candidate| candidate.starts_with(boundary) && candidate.is_file())
        };
        let Some(found) = found else {
            return Err(PathError::NotFound {
                base,
                tried: candidates.iter().map(|c| normalize(c)).collect(),
            });
        };
        let canonical = found.canonicalize().map_err(|e| PathError::Unresolvable {
            path: self.display(&found),
            reason: e.to_string(),
        })?;
        if !canonical.starts_with(boundary) {
            return Err(PathError::LinkOut {
                link: self.display(&found),
                target: canonical,
            });
        }
        Ok(canonical)
    }
}

/// A name made only of plain folder and file names (and `.`): no root, no drive, no `..`.
fn plain_relative(name: &str) -> Result<&Path, PathError> {
    let path = Path::new(name);
    if path.is_absolute() || name.starts_with('/') || name.starts_with('\\') {
        return Err(PathError::Absolute);
    }
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(PathError::ParentComponent),
            Component::RootDir | Component::Prefix(_) => return Err(PathError::Absolute),
        }
    }
    Ok(path)
}

/// How an extension is added to a name.
#[derive(Clone, Copy)]
enum ExtensionStyle {
    /// `dir/h` -> `dir/h.js` (a handler path, which names its module without extension).
    Replace,
    /// `./a.b` -> `./a.b.js` (a module specifier, whose name may itself contain dots).
    Append,
}

/// `base` itself, then `base` with each extension.
fn with_extensions(base: &Path, extensions: &[&str], style: ExtensionStyle) -> Vec<PathBuf> {
    let mut list = vec![base.to_path_buf()];
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for extension in extensions {
        list.push(match style {
            ExtensionStyle::Replace => base.with_extension(extension),
            ExtensionStyle::Append => base.with_file_name(format!("{name}.{extension}")),
        });
    }
    list
}

/// Removes `.` and `..` lexically, so a path that climbs out is caught before touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, WorkspacePaths) {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [
            ("p/h.js", ""),
            ("p/lib/m.mjs", ""),
            ("p/lib/index.js", ""),
            ("p/site/index.html", "<p>"),
            ("p/site/page.html", "<p>"),
            ("q/secret", "secret"),
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let paths = WorkspacePaths::new(dir.path()).unwrap();
        (dir, paths)
    }

    #[test]
    fn handlers_are_found_with_or_without_extension_and_never_outside() {
        let (_dir, paths) = workspace();
        let root = paths.root().to_path_buf();
        assert_eq!(paths.handler("p/h"), Ok(root.join("p/h.js")));
        assert_eq!(paths.handler("p/h.js"), Ok(root.join("p/h.js")));
        assert_eq!(paths.handler("p/lib/m"), Ok(root.join("p/lib/m.mjs")));
        assert_eq!(paths.handler("../x"), Err(PathError::ParentComponent));
        assert_eq!(paths.handler("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(paths.handler(""), Err(PathError::Empty));
        match paths.handler("p/nope") {
            Err(PathError::NotFound { base, tried }) => {
                assert_eq!(paths.display(&base), "p/nope");
                let tried: Vec<String> = tried.iter().map(|t| paths.display(t)).collect();
                assert_eq!(
                    tried,
                    [
                        "p/nope",
                        "p/nope.js",
                        "p/nope.mjs",
                        "p/nope.cjs",
                        "p/nope.ts",
                        "p/nope.mts",
                        "p/nope.cts"
                    ]
                );
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn modules_resolve_from_the_importer_or_the_workspace_root() {
        let (_dir, paths) = workspace();
        let root = paths.root().to_path_buf();
        let importer = root.join("p/h.js");
        assert_eq!(
            paths.module("./lib/m", Some(&importer)),
            Ok(root.join("p/lib/m.mjs"))
        );
        assert_eq!(
            paths.module("./lib", Some(&importer)),
            Ok(root.join("p/lib/index.js"))
        );
        assert_eq!(paths.module("p/h", None), Ok(root.join("p/h.js")));
        assert_eq!(
            paths.module("../../../etc/passwd", Some(&importer)),
            Err(PathError::LeavesBoundary)
        );
        assert_eq!(paths.module("/etc/passwd", None), Err(PathError::Absolute));
        assert_eq!(
            paths.module("lodash", None),
            Err(PathError::NoProject("lodash".into()))
        );
    }

    #[test]
    fn static_files_stay_inside_their_project() {
        let (_dir, paths) = workspace();
        let root = paths.root().to_path_buf();
        assert_eq!(
            paths.project_file("p", "site/page.html"),
            Ok(root.join("p/site/page.html"))
        );
        assert_eq!(
            paths.project_file("p", "site"),
            Ok(root.join("p/site/index.html"))
        );
        assert!(paths.project_file("p", "../q/secret").is_err());
        assert!(paths.project_file("p", "/etc/passwd").is_err());
        assert!(paths.project_file("..", "q/secret").is_err());
        assert!(paths.project_file("", "q/secret").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn no_symbolic_link_leads_out_whatever_the_kind_of_file() {
        let (_dir, paths) = workspace();
        let root = paths.root().to_path_buf();
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, root.join(at));
        link(&root.join("q/secret"), "p/link.js").unwrap();
        link(&root.join("q/secret"), "p/site/sub.html").unwrap();
        std::fs::create_dir_all(root.join("p/linked-dir")).unwrap();
        link(&root.join("q/secret"), "p/linked-dir/index.html").unwrap();
        link(Path::new("/etc"), "p/etc").unwrap();
        // Inside the workspace, a module may be a link to another project's file...
        assert_eq!(
            paths.module("./link", Some(&root.join("p/h.js"))),
            Ok(root.join("q/secret"))
        );
        // ...but a static file may not leave its project, not even as a folder's index file.
        assert!(matches!(
            paths.project_file("p", "site/sub.html"),
            Err(PathError::LinkOut { .. })
        ));
        assert!(matches!(
            paths.project_file("p", "linked-dir"),
            Err(PathError::LinkOut { .. })
        ));
        assert!(matches!(
            paths.project_file("p", "linked-dir/"),
            Err(PathError::LinkOut { .. })
        ));
        assert!(paths.project_file("p", "etc/hostname").is_err());
        assert!(matches!(
            paths.module("./etc/hostname", Some(&root.join("p/h.js"))),
            Err(PathError::LinkOut { .. })
        ));
    }
}
