//! `switchboard types PROJECT`: the handler API's TypeScript declarations and a `tsconfig.json`
//! in a project, for editors and `tsc --noEmit` (`new --ts` writes them too).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The type declarations of the handler API (`net/websockets`, `@aerokit/sdk/net`), for editors.
pub const TYPE_DECLARATIONS: &str = include_str!("../../runtime_js/types/switchboard.d.ts");

/// The file `switchboard types` writes the declarations to, in a project folder.
pub const TYPE_DECLARATIONS_FILE: &str = "switchboard.d.ts";

/// The `tsconfig.json` `switchboard types` writes when a project has none: what the runtime
/// accepts (ES modules, TC39 decorators, imports with or without `.ts`), type-checked strictly,
/// with no browser or Node globals.
pub const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "allowImportingTsExtensions": true,
    "lib": ["ES2022"],
    "types": [],
    "strict": true,
    "noEmit": true
  },
  "include": ["**/*.ts", "**/*.mts", "**/*.cts"]
}
"#;

/// `switchboard types PROJECT`: writes the handler API's type declarations into a project (and a
/// `tsconfig.json`, if it has none), so that an editor completes `Websockets.` and checks
/// handlers typed with `WebsocketHandler`. Returns the files written.
pub fn write_types(project: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !project.is_dir() {
        bail!(
            "{} is not a folder: name a project folder",
            project.display()
        );
    }
    let mut written = Vec::new();
    let declarations = project.join(TYPE_DECLARATIONS_FILE);
    std::fs::write(&declarations, TYPE_DECLARATIONS)
        .with_context(|| format!("cannot write {}", declarations.display()))?;
    written.push(declarations);
    let tsconfig = project.join("tsconfig.json");
    if !tsconfig.exists() {
        std::fs::write(&tsconfig, TSCONFIG)
            .with_context(|| format!("cannot write {}", tsconfig.display()))?;
        written.push(tsconfig);
    }
    Ok(written)
}
