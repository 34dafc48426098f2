import type { Logger } from '../log.js';

export type CriService = 'RuntimeService' | 'ImageService';

/** What a CRI handler receives besides the request. */
export interface RequestContext {
  /** Full method name, e.g. `/runtime.v1.RuntimeService/RunPodSandbox`. */
  rpc: string;
  /** Logger carrying the rpc name and the request's sandbox, container and image ids. */
  log: Logger;
  /** Aborted when the client cancels the call or its deadline passes. */
  signal: AbortSignal;
}

export type UnaryHandler = (request: never, context: RequestContext) => Promise<unknown>;

/** A server-streaming handler writes each message with `send` and resolves when the stream ends. */
export type StreamHandler = (request: never, context: RequestContext, send: (message: unknown) => void) => Promise<void>;

/** A set of CRI RPC implementations for one service, keyed by the proto method name. */
export interface CriHandlerGroup {
  readonly service: CriService;
  unary(): Record<string, UnaryHandler>;
  streams?(): Record<string, StreamHandler>;
}
