import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import type { ContainerService } from '../container/service.js';
import type { StatsService } from '../container/stats.js';
import type { SandboxService } from '../sandbox/service.js';
import type { CriHandlerGroup, RequestContext, UnaryHandler } from './handler.js';
import { requireId } from './container-lifecycle.js';
import { InvalidArgumentError } from '../errors.js';
import type { ContainerStatsRequest__Output } from './generated/runtime/v1/ContainerStatsRequest.js';
import type { ContainerStatsResponse } from './generated/runtime/v1/ContainerStatsResponse.js';
import type { ListContainerStatsRequest__Output } from './generated/runtime/v1/ListContainerStatsRequest.js';
import type { ListContainerStatsResponse } from './generated/runtime/v1/ListContainerStatsResponse.js';
import type { PodSandboxStatsRequest__Output } from './generated/runtime/v1/PodSandboxStatsRequest.js';
import type { PodSandboxStatsResponse } from './generated/runtime/v1/PodSandboxStatsResponse.js';
import type { ListPodSandboxStatsRequest__Output } from './generated/runtime/v1/ListPodSandboxStatsRequest.js';
import type { ListPodSandboxStatsResponse } from './generated/runtime/v1/ListPodSandboxStatsResponse.js';

/** ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats. */
@injectable()
export class StatsHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(
    @inject(Tokens.ContainerService) private readonly containers: ContainerService,
    @inject(Tokens.SandboxService) private readonly sandboxes: SandboxService,
    @inject(Tokens.StatsService) private readonly stats: StatsService,
  ) {}

  unary(): Record<string, UnaryHandler> {
    return {
      ContainerStats: ((request: ContainerStatsRequest__Output, context: RequestContext) => this.containerStats(request, context)) as UnaryHandler,
      ListContainerStats: ((request: ListContainerStatsRequest__Output, context: RequestContext) => this.listContainerStats(request, context)) as UnaryHandler,
      PodSandboxStats: ((request: PodSandboxStatsRequest__Output, context: RequestContext) => this.podStats(request, context)) as UnaryHandler,
      ListPodSandboxStats: ((request: ListPodSandboxStatsRequest__Output, context: RequestContext) => this.listPodStats(request, context)) as UnaryHandler,
    };
  }

  private async containerStats(request: ContainerStatsRequest__Output, context: RequestContext): Promise<ContainerStatsResponse> {
    requireId(request.container_id);
    const record = await this.containers.status(request.container_id, context.log);
    return { stats: await this.stats.containerStats(record, context.log) };
  }

  private async listContainerStats(request: ListContainerStatsRequest__Output, context: RequestContext): Promise<ListContainerStatsResponse> {
    const filter = request.filter;
    const records = await this.containers.list(
      { id: filter?.id || undefined, sandboxId: filter?.pod_sandbox_id || undefined, labels: filter?.label_selector },
      context.log,
    );
    const stats = [];
    for (const record of records) stats.push(await this.stats.containerStats(record, context.log));
    return { stats };
  }

  private async podStats(request: PodSandboxStatsRequest__Output, context: RequestContext): Promise<PodSandboxStatsResponse> {
    if (request.pod_sandbox_id === '') throw new InvalidArgumentError('pod_sandbox_id: must not be empty');
    const sandbox = this.sandboxes.get(request.pod_sandbox_id);
    const members = await this.containers.list({ sandboxId: sandbox.id }, context.log);
    return { stats: await this.stats.sandboxStats(sandbox, members.filter((member) => member.sandboxId === sandbox.id), context.log) };
  }

  private async listPodStats(request: ListPodSandboxStatsRequest__Output, context: RequestContext): Promise<ListPodSandboxStatsResponse> {
    const filter = request.filter;
    const result = [];
    for (const sandbox of this.sandboxes.list()) {
      if (filter?.id && !sandbox.id.startsWith(filter.id)) continue;
      const selector = filter?.label_selector ?? {};
      if (!Object.entries(selector).every(([key, value]) => sandbox.config.labels[key] === value)) continue;
      const members = await this.containers.list({ sandboxId: sandbox.id }, context.log);
      result.push(await this.stats.sandboxStats(sandbox, members.filter((member) => member.sandboxId === sandbox.id), context.log));
    }
    return { stats: result };
  }
}
