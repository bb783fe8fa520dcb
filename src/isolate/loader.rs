//! deno_core's module loader for handler code: built-in API modules by name, and everything else
//! through the workspace's resolver (the same one `require()` uses), so nothing outside the
//! workspace and nothing remote can be loaded.

use deno_core::{
    ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, ResolutionKind,
};
use deno_error::JsErrorBox;
use std::borrow::Cow;

use super::ops::{resolve_module, ModuleOpError};
use crate::workspace::modules::{BuiltinModule, ModuleError, ModuleFiles, ModuleKind};

/// The URL scheme of built-in modules, as they appear in stack traces.
const BUILTIN_SCHEME: &str = "switchboard";

/// The code of a built-in module: ES module text over the runtime's internals.
fn builtin_source(module: BuiltinModule) -> &'static str {
    match module {
        BuiltinModule::Websockets => {
            "const websockets = globalThis.__switchboard.websockets;
export default websockets;
export { websockets as Websockets };
export const { createWebsocket, getClients, getClient, getClientByHandler, getMessage, getError,
  getMethod, isOnOpen, isOnMessage, isOnError, isOnClose, getConnections, getConnection, send,
  disconnect, broadcast, publish, getAllConnections, getNodes } = websockets;
"
        }
        BuiltinModule::SdkNet => {
            "const net = globalThis.__switchboard.sdkNet;
export default net;
export const { Websockets, websockets, Websocket, decorators } = net;
"
        }
    }
}

/// Loads a handler's ES module graph from the workspace.
pub struct WorkspaceModuleLoader {
    /// The workspace's module files, recording what this isolate read.
    pub modules: ModuleFiles,
}

impl ModuleLoader for WorkspaceModuleLoader {
    fn resolve(
        &self,
        specifier: &str,
        referrer: &str,
        _kind: ResolutionKind,
    ) -> Result<ModuleSpecifier, JsErrorBox> {
        if BuiltinModule::named(specifier).is_some() {
            return ModuleSpecifier::parse(&format!("{BUILTIN_SCHEME}:{specifier}"))
                .map_err(JsErrorBox::from_err);
        }
        if specifier.starts_with(&format!("{BUILTIN_SCHEME}:")) {
            return ModuleSpecifier::parse(specifier).map_err(JsErrorBox::from_err);
        }
        let mut url = resolve_module(&self.modules, specifier, referrer)
            .map(|module| module.url)
            .map_err(js_error)?;
        // A reloaded handler's graph is loaded under new URLs, so that every module of it is
        // instantiated afresh: the importer's generation passes on to what it imports.
        let generation_of = |url: &str| {
            ModuleSpecifier::parse(url)
                .ok()
                .filter(|u| u.scheme() == "file")
                .and_then(|u| u.query().map(str::to_string))
        };
        url.set_query(
            generation_of(specifier)
                .or_else(|| generation_of(referrer))
                .as_deref(),
        );
        Ok(url)
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        ModuleLoadResponse::Sync(self.load_sync(specifier).map_err(js_error))
    }

    /// The source map of a TypeScript module (ES module or CommonJS), so that stack traces and
    /// error positions name the TypeScript text.
    fn get_source_map(&self, file_name: &str) -> Option<Cow<'_, [u8]>> {
        let path = ModuleSpecifier::parse(file_name)
            .ok()?
            .to_file_path()
            .ok()?;
        let map = self.modules.source_map(&path)?;
        Some(Cow::Owned(map.to_vec()))
    }
}

impl WorkspaceModuleLoader {
    /// A module's code: a built-in's, an ES module's own text, or for a CommonJS or JSON file an
    /// ES module whose default export is its `module.exports`.
    fn load_sync(&self, specifier: &ModuleSpecifier) -> Result<ModuleSource, ModuleError> {
        if specifier.scheme() == BUILTIN_SCHEME {
            let module =
                BuiltinModule::named(specifier.path()).ok_or_else(|| ModuleError::NotFound {
                    specifier: specifier.to_string(),
                    from: String::new(),
                    reason: "no such built-in module".into(),
                })?;
            return Ok(javascript(builtin_source(module).to_string(), specifier));
        }
        let module = resolve_module(&self.modules, specifier.as_str(), "")?;
        let loaded = self.modules.read_code(&module.path)?;
        let code = match loaded.kind {
            ModuleKind::EsModule => loaded.code.to_string(),
            // A CommonJS or JSON module imported from an ES module is its `module.exports`.
            ModuleKind::CommonJs | ModuleKind::Json => format!(
                "export default globalThis.__switchboard.requireFromEsm({});\n",
                serde_json::to_string(module.url.as_str()).unwrap_or_default()
            ),
        };
        Ok(javascript(code, specifier))
    }
}

/// A module error as the engine reports it, with the class `require()` gives it too.
fn js_error(error: ModuleError) -> JsErrorBox {
    JsErrorBox::from_err(ModuleOpError::from(error))
}

/// JavaScript module source.
fn javascript(code: String, specifier: &ModuleSpecifier) -> ModuleSource {
    ModuleSource::new(
        ModuleType::JavaScript,
        ModuleSourceCode::String(code.into()),
        specifier,
        None,
    )
}
