// Type declarations of Switchboard's handler API, for editors and `tsc --noEmit`: the built-in
// modules `net/websockets` (also `net/v4/websockets`) and Dirigible's SDK module
// `@aerokit/sdk/net` (also `sdk/net`, `@dirigible/net`). Written into a project by
// `switchboard types PROJECT`; the runtime does not read it (no type checking on load).
// Also the globals handler code has besides the language's own, for a project compiled without
// browser or Node types (the tsconfig.json `switchboard types` writes).

/** `console`: logged with the handler's path (`RUST_LOG` filters levels). */
interface Console {
  log(...data: any[]): void;
  info(...data: any[]): void;
  warn(...data: any[]): void;
  error(...data: any[]): void;
  debug(...data: any[]): void;
  trace(...data: any[]): void;
}
declare var console: Console;
declare function setTimeout(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function setInterval(callback: (...args: any[]) => void, ms?: number, ...args: any[]): number;
declare function clearTimeout(id?: number): void;
declare function clearInterval(id?: number): void;
declare function queueMicrotask(callback: () => void): void;
declare function structuredClone<T>(value: T): T;
interface TextEncoder {
  readonly encoding: string;
  encode(input?: string): Uint8Array;
}
declare var TextEncoder: { prototype: TextEncoder; new (): TextEncoder };
interface TextDecoder {
  readonly encoding: string;
  decode(input?: ArrayBuffer | ArrayBufferView, options?: { stream?: boolean }): string;
}
declare var TextDecoder: {
  prototype: TextDecoder;
  new (label?: string, options?: { fatal?: boolean; ignoreBOM?: boolean }): TextDecoder;
};

declare module "net/websockets" {
  /** A message as a handler receives it: a text frame as a string, a binary frame as bytes. */
  export type Message = string | Uint8Array;

  /**
   * What `send`, `broadcast`, `publish` and a handler's return value accept: text, bytes, or any
   * other value, sent as JSON text.
   */
  export type Sendable = string | Uint8Array | ArrayBuffer | ArrayBufferView | object | number | boolean;

  /** How a connection or client closed. */
  export interface CloseInfo {
    /** The close code (1000 normal, 1001 going away, 1006 no close frame, ...). */
    code: number;
    /** The close reason, possibly empty. */
    reason: string;
    /** Whether both sides exchanged close frames. */
    wasClean: boolean;
  }

  /** An inbound connection to one of the workspace's endpoints. */
  export interface Connection {
    /** The connection's id, unique in the runtime. */
    readonly id: number;
    /** The endpoint it connected to. */
    readonly endpoint: string;
    /** The peer's address, `ip:port`. */
    readonly remoteAddress: string | null;
    /** When the connection opened. */
    readonly openedAt: Date | null;
    /** What the endpoint's `onUpgrade` returned (an empty object when it has none). */
    data: any;
    /** The topics it is subscribed to. */
    readonly topics: string[];
    /** Sends text, bytes, or a value as JSON text. Throws once the connection is closing. */
    send(data: Sendable): void;
    /** Closes with `code` (1000, or 3000-4999) and a reason of at most 123 bytes. */
    close(code?: number, reason?: string): void;
    /** Sends `{"type":"event","event":event,"params":[...params]}` (B4X's named events). */
    emit(event: string, ...params: unknown[]): void;
    /** Subscribes to a topic of `publish`. */
    subscribe(topic: string): void;
    /** Unsubscribes from a topic. */
    unsubscribe(topic: string): void;
    /** `connection 3 (endpoint)`. */
    toString(): string;
  }

  /** How an outbound client hands its messages to its handler. */
  export type DataType = "text" | "blob" | "object";

  /** An outbound client's state. */
  export type ClientStatus = "Connecting" | "Connected" | "Closing" | "Closed";

  /** Options of `createWebsocket`. */
  export interface ClientOptions {
    /** Extra headers on the upgrade request. */
    headers?: Record<string, string | string[]>;
    /** Requested subprotocols; the agreed one is `client.protocol`. */
    protocols?: string | string[];
    /** `text` (default), `blob` (every message as bytes), `object` (text parsed as JSON). */
    dataType?: DataType;
    /** `ca`: PEM text or a workspace path of a private CA; `insecure`: accept any certificate. */
    tls?: { ca?: string; insecure?: boolean };
    /** Connect and handshake timeout in milliseconds (default 10000). */
    connectTimeoutMs?: number;
    /** Offer permessage-deflate (default true); used when the server accepts it. */
    compression?: boolean;
    /** Dirigible's engine name: accepted and ignored. */
    engine?: string;
  }

  /** An outbound WebSocket client (`createWebsocket`). */
  export interface WebsocketClient {
    /** The client's id, unique in the runtime. */
    readonly id: number;
    /** The server's URL. */
    readonly uri: string;
    /** The same as `uri`. */
    readonly url: string;
    /** The workspace module whose exports get the client's events. */
    readonly handler: string;
    /** How messages are handed to the handler. */
    readonly dataType: DataType;
    /** Where the connection stands. */
    readonly status: ClientStatus;
    /** The subprotocol the server agreed to, or "". */
    readonly protocol: string;
    /** Sends text, bytes, or a value as JSON text (queued while connecting). */
    send(data: Sendable): void;
    /** Closes with `code` (1000, or 3000-4999) and a reason of at most 123 bytes. */
    close(code?: number, reason?: string): void;
    /** The same as `close`. */
    terminate(code?: number, reason?: string): void;
  }

  /** A client as `getClients()` lists it. */
  export interface ClientInfo {
    /** The client's id. */
    id: number;
    /** The server's URL. */
    uri: string;
    /** The module that handles its events. */
    handler: string;
    /** Where the connection stands. */
    status: ClientStatus;
  }

  /** The upgrade request `onUpgrade` decides on. */
  export interface UpgradeRequest {
    /** `GET`. */
    method: string;
    /** The path and query. */
    url: string;
    /** The path. */
    path: string;
    /** The query's parameters. */
    query: Record<string, string>;
    /** The request's headers, names lower-cased. */
    headers: Record<string, string>;
    /** The request's cookies. */
    cookies: Record<string, string>;
    /** The peer's address, `ip:port`. */
    remoteAddress: string;
    /** The endpoint asked for. */
    endpoint: string;
  }

  type Awaitable<T> = T | Promise<T>;

  /**
   * The exports a handler module may have; a missing export is not called. Typing an export
   * with it lets the editor check its signature:
   * `export const onMessage: WebsocketHandler["onMessage"] = (message, conn) => ...`.
   */
  export interface WebsocketHandler {
    /** After the upgrade (for a client: once connected). */
    onOpen?(conn: Connection): Awaitable<void>;
    /** For every message; a returned value other than undefined/null is sent back. */
    onMessage?(message: Message, conn: Connection): Awaitable<Sendable | void | null | undefined>;
    /** A network error, or an event of this handler that threw: its message and where. */
    onError?(error: string, conn: Connection): Awaitable<void>;
    /** Once, when the connection has closed. */
    onClose?(conn: Connection, info: CloseInfo): Awaitable<void>;
    /** Before the upgrade: `true` or an object (it becomes `conn.data`) accepts; anything else refuses. */
    onUpgrade?(request: UpgradeRequest): Awaitable<boolean | object | null | undefined>;
    /** A descriptor's periodic service: at its interval. */
    onTick?(endpoint: string): Awaitable<void>;
    /** When the endpoint is bound. */
    onStart?(endpoint: string): Awaitable<void>;
    /** When the endpoint is unbound or the server stops. */
    onStop?(endpoint: string): Awaitable<void>;
  }

  /** The handler exports' types, one by one. */
  export type OnOpen = NonNullable<WebsocketHandler["onOpen"]>;
  export type OnMessage = NonNullable<WebsocketHandler["onMessage"]>;
  export type OnError = NonNullable<WebsocketHandler["onError"]>;
  export type OnClose = NonNullable<WebsocketHandler["onClose"]>;
  export type OnUpgrade = NonNullable<WebsocketHandler["onUpgrade"]>;

  /** Dirigible's `Websockets`: static methods only (`new` throws). */
  export class Websockets {
    private constructor();
    /** Opens a client to a ws:// or wss:// server; its events go to `handler`'s exports. */
    static createWebsocket(uri: string, handler: string, engineOrOptions?: string | ClientOptions): WebsocketClient;
    /** Every live client of the runtime. */
    static getClients(): ClientInfo[];
    /** A live client by id, or null. */
    static getClient(id: number): WebsocketClient | null;
    /** The live client whose handler is `handler`, or null. */
    static getClientByHandler(handler: string): WebsocketClient | null;
    /** Inside an event: the message of `onMessage` (null elsewhere). */
    static getMessage(): Message | null;
    /** Inside an event: the error of `onError` (null elsewhere). */
    static getError(): string | null;
    /** Inside an event: `onopen`, `onmessage`, `onerror` or `onclose` (null outside one). */
    static getMethod(): "onopen" | "onmessage" | "onerror" | "onclose" | null;
    /** Whether the current event is `onOpen`. */
    static isOnOpen(): boolean;
    /** Whether the current event is `onMessage`. */
    static isOnMessage(): boolean;
    /** Whether the current event is `onError`. */
    static isOnError(): boolean;
    /** Whether the current event is `onClose`. */
    static isOnClose(): boolean;
    /** The open connections, of one endpoint or of all. */
    static getConnections(endpoint?: string): Connection[];
    /** An open connection by id, or null. */
    static getConnection(id: number): Connection | null;
    /** Sends to one connection. */
    static send(connectionId: number, data: Sendable): void;
    /** Closes one connection. */
    static disconnect(connectionId: number, code?: number, reason?: string): void;
    /** Sends to every connection of an endpoint; returns how many got it. */
    static broadcast(endpoint: string, data: Sendable, options?: { except?: Array<number | Connection> }): number;
    /** Sends to every subscriber of a topic, on every node; returns how many on this node got it. */
    static publish(topic: string, data: Sendable): number;
    /**
     * The connections of every live node (`serve --broker`), of one endpoint or of all. Settles
     * within `waitMs` (default 1000, at most 30000) with the nodes that answered, naming those
     * that did not; never rejects because a node is slow. At most `limit` (default 10000) per node.
     */
    static getAllConnections(endpoint?: string, options?: { waitMs?: number; limit?: number }): Promise<AllConnections>;
    /** The live nodes, this one first (only this one without a broker). */
    static getNodes(): NodeInfo[];
  }

  /** One node of the application. */
  export interface NodeInfo {
    /** Its number: the high bits of its connection ids (0 without a broker). */
    id: number;
    /** Its name (`--node-name`; default host name and port). */
    name: string;
    /** The address its clients connect to. */
    address: string;
    /** Its open connections, as of its last heartbeat. */
    connections: number;
    /** Whether it is the node asking. */
    self: boolean;
  }

  /** A connection on any node, as `getAllConnections` lists it. */
  export interface ConnectionRecord {
    id: number;
    /** The node it is open on. */
    node: number;
    endpoint: string;
    remoteAddress: string;
    /** Milliseconds since the Unix epoch. */
    openedAt: number;
    /** `conn.data`, as `onUpgrade` attached it. */
    data?: unknown;
    topics: string[];
    /** Messages received from it, and sent to it. */
    messagesIn: number;
    messagesOut: number;
  }

  /** What `getAllConnections` found. */
  export interface AllConnections {
    /** The connections of the nodes that answered, this node's first. */
    connections: ConnectionRecord[];
    /** The nodes that answered, this one included. */
    nodes: NodeInfo[];
    /** Live nodes that did not answer in time. */
    missing: NodeInfo[];
    /** Whether some node held more than `limit` connections. */
    truncated: boolean;
  }

  /** The same functions, as `require("net/websockets")` gives them. */
  const websockets: typeof Websockets;
  export default websockets;
  export const createWebsocket: typeof Websockets.createWebsocket;
  export const getClients: typeof Websockets.getClients;
  export const getClient: typeof Websockets.getClient;
  export const getClientByHandler: typeof Websockets.getClientByHandler;
  export const getMessage: typeof Websockets.getMessage;
  export const getError: typeof Websockets.getError;
  export const getMethod: typeof Websockets.getMethod;
  export const isOnOpen: typeof Websockets.isOnOpen;
  export const isOnMessage: typeof Websockets.isOnMessage;
  export const isOnError: typeof Websockets.isOnError;
  export const isOnClose: typeof Websockets.isOnClose;
  export const getConnections: typeof Websockets.getConnections;
  export const getConnection: typeof Websockets.getConnection;
  export const send: typeof Websockets.send;
  export const disconnect: typeof Websockets.disconnect;
  export const broadcast: typeof Websockets.broadcast;
  export const publish: typeof Websockets.publish;
  export const getAllConnections: typeof Websockets.getAllConnections;
  export const getNodes: typeof Websockets.getNodes;
}

declare module "net/v4/websockets" {
  export * from "net/websockets";
  export { default } from "net/websockets";
}

declare module "@aerokit/sdk/net" {
  export { Websockets, Websockets as websockets } from "net/websockets";
  export type {
    Message,
    Sendable,
    CloseInfo,
    Connection,
    DataType,
    ClientStatus,
    ClientOptions,
    WebsocketClient,
    ClientInfo,
    UpgradeRequest,
    WebsocketHandler,
    OnOpen,
    OnMessage,
    OnError,
    OnClose,
    OnUpgrade,
    NodeInfo,
    ConnectionRecord,
    AllConnections,
  } from "net/websockets";

  /** The options of `@Websocket`. */
  export interface WebsocketOptions {
    /** A display name (shown in listings when there is no `description`). */
    name: string;
    /** The endpoint: `/websockets/v4/service/{endpoint}`; a string literal, read by the scan. */
    endpoint: string;
    /** Shown in listings. */
    description?: string;
    /**
     * How many isolates run this module, each on its own thread: 1 to 64, or "auto" (one per
     * core); 1 when absent. Module state is per instance. This and the options below are a
     * descriptor's fields of the same names: literals, read by the scan and checked alike.
     */
    instances?: number | "auto";
    /** The largest message this endpoint accepts, in bytes (the server's default when absent). */
    maxMessageSize?: number;
    /** The most connections this endpoint holds at once (no limit of its own when absent). */
    maxConnections?: number;
    /** Browser origins allowed to open the endpoint (`Origin` header); any when absent. */
    allowedOrigins?: string[];
    /** Calls the handler's `onTick` every `interval` ("500ms", "10s", "1m" or milliseconds). */
    service?: { interval: string | number };
    /** permessage-deflate for this endpoint; the server's `--compression` when absent. */
    compression?: "off" | "shared" | "dedicated";
    /** The window of "dedicated" compression, 8 to 15 bits (15 when absent). */
    compressionWindowBits?: number;
  }

  /**
   * Declares an endpoint, in a file whose name ends in `websocket.ts`; its handler is that file's
   * exported `onOpen/onMessage/onError/onClose`. Records its options on the class.
   */
  export function Websocket(
    options: WebsocketOptions,
  ): <T extends abstract new (...args: any) => any>(target: T, context: ClassDecoratorContext<T>) => void;

  /** The decorators, as a namespace. */
  export const decorators: { readonly Websocket: typeof Websocket };
}

declare module "sdk/net" {
  export * from "@aerokit/sdk/net";
}

declare module "@dirigible/net" {
  export * from "@aerokit/sdk/net";
}
