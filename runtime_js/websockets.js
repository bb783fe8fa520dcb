// The `net/websockets` API (also `net/v4/websockets`, and `websockets` in `sdk/net`):
// Dirigible's functions, over the isolate's internals set up by bootstrap.js.
"use strict";

((globalThis) => {
  const internals = globalThis.__switchboard;
  const { context } = internals;

  const websockets = {
    // Dirigible's event-context functions: meaningful inside a handler's event, null/false outside.
    getMessage: context.getMessage,
    getError: context.getError,
    getMethod: context.getMethod,
    isOnOpen: context.isOnOpen,
    isOnMessage: context.isOnMessage,
    isOnError: context.isOnError,
    isOnClose: context.isOnClose,

    // Outbound clients.
    createWebsocket(uri, handler, _engineOrOptions) {
      throw new Error(
        `createWebsocket(${JSON.stringify(uri)}, ${JSON.stringify(handler)}): outbound clients are not available in this build of Switchboard`,
      );
    },
    getClients() {
      return [];
    },
    getClient(_id) {
      return null;
    },
    getClientByHandler(_handler) {
      return null;
    },
  };

  Object.freeze(websockets);
  internals.websockets = websockets;
  for (const name of ["net/websockets", "net/v4/websockets"]) {
    internals.builtinModules.set(name, websockets);
  }
  const sdkNet = Object.freeze({ websockets });
  for (const name of ["sdk/net", "@aerokit/sdk/net", "@dirigible/net"]) {
    internals.builtinModules.set(name, sdkNet);
  }
})(globalThis);
