// CommonJS: require() of built-in modules and of workspace files (read through an op, inside the
// workspace only), with a module cache per generation of handler code.
"use strict";

((internals) => {
  const { core } = internals;
  const { op_sb_read_module } = internals.ops;

  // ------------------------------------------------------------- CommonJS
  const builtinModules = new Map();
  let moduleCache = new Map();

  // The wrapper shares the module's first line, so every reported line number is the file's own.
  function compileCommonJs(source, url) {
    const body = source.startsWith("#!") ? "//" + source.slice(2) : source;
    const wrapped = `(function (exports, require, module, __filename, __dirname) {${body}\n})`;
    const [fn, error] = core.evalContext(wrapped, url);
    if (error) throw error.thrown;
    return fn;
  }

  function makeRequire(referrer) {
    const require = (specifier) => {
      if (typeof specifier !== "string") {
        throw new TypeError(`require: the module name must be a string, got ${typeof specifier}`);
      }
      const builtin = builtinModules.get(specifier);
      if (builtin !== undefined) return builtin;
      const [path, url, source, kind] = op_sb_read_module(specifier, referrer);
      return loadCommonJs(path, url, source, kind);
    };
    return require;
  }

  function loadCommonJs(path, url, source, kind) {
    const cached = moduleCache.get(path);
    if (cached !== undefined) return cached.exports;
    if (kind === "json") {
      const module = { exports: JSON.parse(source) };
      moduleCache.set(path, module);
      return module.exports;
    }
    if (kind === "esm") {
      throw new Error(`${path} is an ES module (it uses import/export): load it with import, not require()`);
    }
    const fn = compileCommonJs(source, url);
    const module = { exports: {}, id: path, filename: path, loaded: false };
    moduleCache.set(path, module);
    const dirname = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : ".";
    try {
      fn.call(module.exports, module.exports, makeRequire(url), module, path, dirname);
    } catch (e) {
      moduleCache.delete(path);
      throw e;
    }
    module.loaded = true;
    return module.exports;
  }

  Object.assign(internals, {
    builtinModules,
    compileCommonJs,
    // Loads the handler's main module when it is CommonJS; returns its exports.
    requireMain(specifier) {
      const [path, url, source, kind] = op_sb_read_module(specifier, "");
      return loadCommonJs(path, url, source, kind);
    },
    // Loads a CommonJS module for an ES module that imports it (default export).
    requireFromEsm(specifier) {
      return makeRequire("")(specifier);
    },
    // The module cache of the generation serving; a reload starts a new one and puts the old
    // one back if the new code fails to load.
    takeModuleCache() {
      const cache = moduleCache;
      moduleCache = new Map();
      return cache;
    },
    restoreModuleCache(cache) {
      moduleCache = cache;
    },
  });
})(globalThis.__switchboardBootstrap);
