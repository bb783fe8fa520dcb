// Copyright 2018-2026 the Deno authors. MIT license.
// Re-export fields from `globalThis.__bootstrap` so that embedders using
// ES modules can import these symbols instead of capturing the bootstrap ns.
// Switchboard (vendor/README.md): primordials are not re-exported, so that this module, which
// lives as long as the isolate, does not keep every one of them alive.
const { core, internals } = globalThis.__bootstrap;

export { core, internals };
