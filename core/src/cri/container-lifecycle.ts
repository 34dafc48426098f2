import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { InvalidArgumentError } from '../errors.js';
import type { ContainerService } from '../container/service.js';
import type { CriHandlerGroup, RequestContext, UnaryHandler } from './handler.js';
import type { CreateContainerRequest__Output } from './generated/runtime/v1/CreateContainerRequest.js';
import type { CreateContainerResponse } from './generated/runtime/v1/CreateContainerResponse.js';
import type { StartContainerRequest__Output } from './generated/runtime/v1/StartContainerRequest.js';
import type { StopContainerRequest__Output } from './generated/runtime/v1/StopContainerRequest.js';
import type { RemoveContainerRequest__Output } from './generated/runtime/v1/RemoveContainerRequest.js';

/** CreateContainer, StartContainer, StopContainer and RemoveContainer. */
@injectable()
export class ContainerLifecycleHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(@inject(Tokens.ContainerService) private readonly containers: ContainerService) {}

  unary(): Record<string, UnaryHandler> {
    return {
      CreateContainer: ((request: CreateContainerRequest__Output, context: RequestContext) => this.create(request, context)) as UnaryHandler,
      StartContainer: ((request: StartContainerRequest__Output, context: RequestContext) => this.start(request, context)) as UnaryHandler,
      StopContainer: ((request: StopContainerRequest__Output, context: RequestContext) => this.stop(request, context)) as UnaryHandler,
      RemoveContainer: ((request: RemoveContainerRequest__Output, context: RequestContext) => this.remove(request, context)) as UnaryHandler,
    };
  }

  private async create(request: CreateContainerRequest__Output, context: RequestContext): Promise<CreateContainerResponse> {
    if (request.pod_sandbox_id === '') throw new InvalidArgumentError('pod_sandbox_id: must not be empty');
    if (!request.config) throw new InvalidArgumentError('config: must be set');
    const id = await this.containers.create(request.pod_sandbox_id, request.config, context.log);
    return { container_id: id };
  }

  private async start(request: StartContainerRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.container_id);
    await this.containers.start(request.container_id, context.log);
    return {};
  }

  private async stop(request: StopContainerRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.container_id);
    const timeout = Number(request.timeout);
    if (!Number.isSafeInteger(timeout) || timeout < 0) {
      throw new InvalidArgumentError(`timeout: ${request.timeout} is not a number of seconds (0 or more)`);
    }
    await this.containers.stop(request.container_id, timeout, context.log);
    return {};
  }

  private async remove(request: RemoveContainerRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.container_id);
    await this.containers.remove(request.container_id, context.log);
    return {};
  }
}

export function requireId(id: string): void {
  if (id === '') throw new InvalidArgumentError('container_id: must not be empty');
}
