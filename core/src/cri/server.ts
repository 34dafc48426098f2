import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { errorMessage, isErrno, StartupError } from '../errors.js';
import { loadCriProto } from './proto.js';
import { toServiceError } from './status.js';
import type { CriHandlerGroup, CriService, RequestContext, StreamHandler, UnaryHandler } from './handler.js';

/** The socket is already served by a live process; start-up must stop. */
export class SocketInUseError extends StartupError {
  constructor(socketPath: string) {
    super(
      `socket ${socketPath} is in use by a running process (a connection to it succeeded); stop that daemon or pass another --listen path`,
    );
  }
}

/** Time given to in-flight calls on shutdown before they are cancelled. */
const SHUTDOWN_GRACE_MS = 30_000;

/**
 * The CRI gRPC server on a unix socket. Every method of RuntimeService and ImageService is bound:
 * to its handler when a group implements it, else to a stub that returns UNIMPLEMENTED.
 */
export class CriServer {
  private server?: grpc.Server;

  constructor(
    private readonly socketPath: string,
    private readonly groups: CriHandlerGroup[],
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const proto = await loadCriProto();
    const server = new grpc.Server({
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
    });

    const services: Record<CriService, grpc.ServiceDefinition> = {
      RuntimeService: proto.runtime.v1.RuntimeService.service,
      ImageService: proto.runtime.v1.ImageService.service,
    };
    for (const [service, definition] of Object.entries(services) as [CriService, grpc.ServiceDefinition][]) {
      server.addService(definition, this.bindService(service, definition));
    }

    await prepareSocketPath(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${this.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(new Error(`cannot listen on ${this.socketPath}: ${err.message}`)) : resolve(),
      );
    });
    await chmod(this.socketPath, 0o660);
    this.server = server;
    this.log.info({ socket: this.socketPath }, 'CRI server listening');
  }

  /** Stops accepting calls, lets in-flight calls finish (cancelling them after a grace period). */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;

    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ grace_ms: SHUTDOWN_GRACE_MS }, 'in-flight CRI calls did not finish in time; cancelling them');
        server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });

    try {
      await unlink(this.socketPath);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) this.log.warn({ socket: this.socketPath, err }, 'cannot remove socket file');
    }
    this.log.info('CRI server stopped');
  }

  private bindService(service: CriService, definition: grpc.ServiceDefinition): grpc.UntypedServiceImplementation {
    const unary = new Map<string, UnaryHandler>();
    const streams = new Map<string, StreamHandler>();
    for (const group of this.groups.filter((g) => g.service === service)) {
      for (const [name, handler] of Object.entries(group.unary())) unary.set(name, handler);
      for (const [name, handler] of Object.entries(group.streams?.() ?? {})) streams.set(name, handler);
    }

    const implementation: grpc.UntypedServiceImplementation = {};
    for (const [name, method] of Object.entries(definition)) {
      const rpc = method.path;
      if (method.responseStream) {
        implementation[name] = this.wrapStream(rpc, streams.get(name));
      } else {
        implementation[name] = this.wrapUnary(rpc, unary.get(name));
      }
    }
    return implementation;
  }

  private wrapUnary(rpc: string, handler: UnaryHandler | undefined): grpc.handleUnaryCall<unknown, unknown> {
    return (call, callback) => {
      const { context, done } = this.requestContext(rpc, call.request, call);
      if (!handler) {
        callback({ code: grpc.status.UNIMPLEMENTED, details: `${rpc} is not implemented by berth` });
        done();
        return;
      }

      const started = process.hrtime.bigint();
      handler(call.request as never, context).then(
        (response) => {
          context.log.debug({ duration_ms: elapsedMs(started) }, 'request done');
          callback(null, response);
          done();
        },
        (err: unknown) => {
          this.logFailure(context, err, started);
          callback(toServiceError(err) as grpc.ServiceError);
          done();
        },
      );
    };
  }

  private wrapStream(rpc: string, handler: StreamHandler | undefined): grpc.handleServerStreamingCall<unknown, unknown> {
    return (call) => {
      const { context, done } = this.requestContext(rpc, call.request, call);
      if (!handler) {
        call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: `${rpc} is not implemented by berth` });
        done();
        return;
      }

      const started = process.hrtime.bigint();
      handler(call.request as never, context, (message) => call.write(message)).then(
        () => {
          call.end();
          done();
        },
        (err: unknown) => {
          this.logFailure(context, err, started);
          call.emit('error', toServiceError(err));
          done();
        },
      );
    };
  }

  private requestContext(
    rpc: string,
    request: unknown,
    call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  ): { context: RequestContext; done: () => void } {
    const controller = new AbortController();
    const onCancel = (): void => controller.abort(new Error(`${rpc} cancelled by the client`));
    call.on('cancelled', onCancel);

    const log = this.log.child({ rpc, ...requestIds(request) });
    log.debug('request');
    return {
      context: { rpc, log, signal: controller.signal },
      done: () => call.off('cancelled', onCancel),
    };
  }

  private logFailure(context: RequestContext, err: unknown, started: bigint): void {
    const code = toServiceError(err).code ?? grpc.status.INTERNAL;
    const fields = { err: errorMessage(err), code: grpc.status[code], duration_ms: elapsedMs(started) };
    // Client mistakes are the client's to report; server-side failures are errors here.
    const clientSide = [grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.ALREADY_EXISTS, grpc.status.FAILED_PRECONDITION];
    if (clientSide.includes(code)) context.log.info(fields, 'request rejected');
    else if (code === grpc.status.DEADLINE_EXCEEDED) context.log.warn(fields, 'request timed out');
    else if (code === grpc.status.UNIMPLEMENTED) context.log.warn(fields, 'request not supported by berth');
    else context.log.error(fields, 'request failed');
  }
}

/** Picks the ids worth logging out of any CRI request. */
export function requestIds(request: unknown): Record<string, string> {
  const ids: Record<string, string> = {};
  if (typeof request !== 'object' || request === null) return ids;
  const body = request as Record<string, unknown>;

  for (const key of ['pod_sandbox_id', 'container_id'] as const) {
    if (typeof body[key] === 'string' && body[key] !== '') ids[key === 'pod_sandbox_id' ? 'sandbox_id' : key] = body[key];
  }

  const image = body.image as { image?: unknown } | undefined;
  if (image && typeof image.image === 'string' && image.image !== '') ids.image = image.image;

  const metadata = (body.config as { metadata?: { name?: unknown; namespace?: unknown } } | undefined)?.metadata;
  if (metadata && typeof metadata.name === 'string' && metadata.name !== '') ids.name = metadata.name;
  if (metadata && typeof metadata.namespace === 'string' && metadata.namespace !== '') ids.namespace = metadata.namespace;

  return ids;
}

/**
 * Makes `socketPath` ready to bind: creates its parent directories, replaces a stale socket left by
 * a dead daemon, and refuses a socket a live process still serves or a path that is not a socket.
 */
export async function prepareSocketPath(socketPath: string): Promise<void> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });

  let stats;
  try {
    stats = await lstat(socketPath);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  if (!stats.isSocket()) {
    throw new Error(`cannot listen on ${socketPath}: the path exists and is not a socket; remove it or pass another --listen path`);
  }

  if (await socketIsLive(socketPath)) throw new SocketInUseError(socketPath);
  await unlink(socketPath);
}

function socketIsLive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      socket.destroy();
      resolve(!(err.code === 'ECONNREFUSED' || err.code === 'ENOENT'));
    });
  });
}

function elapsedMs(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e6;
}
