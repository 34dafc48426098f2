import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { InvalidArgumentError, UnimplementedError } from '../errors.js';
import type { ContainerService } from '../container/service.js';
import type { CriHandlerGroup, RequestContext, UnaryHandler } from './handler.js';
import { requireId } from './container-lifecycle.js';
import type { ExecSyncRequest__Output } from './generated/runtime/v1/ExecSyncRequest.js';
import type { ExecSyncResponse } from './generated/runtime/v1/ExecSyncResponse.js';

/**
 * ExecSync, plus Exec, Attach and PortForward, which need the kubelet's streaming server.
 * NOTE: berth serves no streaming endpoint yet, so those three fail with UNIMPLEMENTED.
 */
@injectable()
export class ExecHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(@inject(Tokens.ContainerService) private readonly containers: ContainerService) {}

  unary(): Record<string, UnaryHandler> {
    const streaming = (rpc: string) => (async () => {
      throw new UnimplementedError(`${rpc} needs a streaming server (SPDY/WebSocket), which berth does not provide yet; use ExecSync for probes`);
    }) as UnaryHandler;
    return {
      ExecSync: ((request: ExecSyncRequest__Output, context: RequestContext) => this.execSync(request, context)) as UnaryHandler,
      Exec: streaming('Exec'),
      Attach: streaming('Attach'),
      PortForward: streaming('PortForward'),
    };
  }

  private async execSync(request: ExecSyncRequest__Output, context: RequestContext): Promise<ExecSyncResponse> {
    requireId(request.container_id);
    const timeout = Number(request.timeout);
    if (!Number.isSafeInteger(timeout)) throw new InvalidArgumentError(`timeout: ${request.timeout} is not a number of seconds`);
    const result = await this.containers.execSync(request.container_id, request.cmd, timeout, context.log);
    return { stdout: result.stdout, stderr: result.stderr, exit_code: result.exitCode };
  }
}
