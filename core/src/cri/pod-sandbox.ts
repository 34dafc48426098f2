import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { InvalidArgumentError } from '../errors.js';
import type { SandboxService } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import type { CriHandlerGroup, RequestContext, UnaryHandler } from './handler.js';
import type { RunPodSandboxRequest__Output } from './generated/runtime/v1/RunPodSandboxRequest.js';
import type { RunPodSandboxResponse } from './generated/runtime/v1/RunPodSandboxResponse.js';
import type { StopPodSandboxRequest__Output } from './generated/runtime/v1/StopPodSandboxRequest.js';
import type { RemovePodSandboxRequest__Output } from './generated/runtime/v1/RemovePodSandboxRequest.js';
import type { PodSandboxStatusRequest__Output } from './generated/runtime/v1/PodSandboxStatusRequest.js';
import type { PodSandboxStatusResponse } from './generated/runtime/v1/PodSandboxStatusResponse.js';
import type { ListPodSandboxRequest__Output } from './generated/runtime/v1/ListPodSandboxRequest.js';
import type { ListPodSandboxResponse } from './generated/runtime/v1/ListPodSandboxResponse.js';
import type { PodSandbox } from './generated/runtime/v1/PodSandbox.js';

/** RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and ListPodSandbox. */
@injectable()
export class PodSandboxHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(@inject(Tokens.SandboxService) private readonly sandboxes: SandboxService) {}

  unary(): Record<string, UnaryHandler> {
    return {
      RunPodSandbox: ((request: RunPodSandboxRequest__Output, context: RequestContext) => this.run(request, context)) as UnaryHandler,
      StopPodSandbox: ((request: StopPodSandboxRequest__Output, context: RequestContext) => this.stop(request, context)) as UnaryHandler,
      RemovePodSandbox: ((request: RemovePodSandboxRequest__Output, context: RequestContext) => this.remove(request, context)) as UnaryHandler,
      PodSandboxStatus: ((request: PodSandboxStatusRequest__Output) => this.status(request)) as UnaryHandler,
      ListPodSandbox: ((request: ListPodSandboxRequest__Output) => this.list(request)) as UnaryHandler,
    };
  }

  private async run(request: RunPodSandboxRequest__Output, context: RequestContext): Promise<RunPodSandboxResponse> {
    if (!request.config) throw new InvalidArgumentError('config: must be set');
    const id = await this.sandboxes.run(request.config, request.runtime_handler, context.log);
    return { pod_sandbox_id: id };
  }

  private async stop(request: StopPodSandboxRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.pod_sandbox_id);
    await this.sandboxes.stop(request.pod_sandbox_id, context.log);
    return {};
  }

  private async remove(request: RemovePodSandboxRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.pod_sandbox_id);
    await this.sandboxes.remove(request.pod_sandbox_id, context.log);
    return {};
  }

  private async status(request: PodSandboxStatusRequest__Output): Promise<PodSandboxStatusResponse> {
    requireId(request.pod_sandbox_id);
    const record = this.sandboxes.get(request.pod_sandbox_id);
    const [primary, ...additional] = record.ips;
    const response: PodSandboxStatusResponse = {
      status: {
        id: record.id,
        metadata: record.config.metadata,
        state: criState(record),
        created_at: record.createdAtNs,
        network: { ip: primary ?? '', additional_ips: additional.map((ip) => ({ ip })) },
        linux: {
          namespaces: {
            options: {
              network: record.namespaces.network,
              pid: record.namespaces.pid,
              ipc: record.namespaces.ipc,
              target_id: '',
            },
          },
        },
        labels: record.config.labels,
        annotations: record.config.annotations,
        runtime_handler: record.runtimeHandler,
      },
      info: {},
      timestamp: String(BigInt(Date.now()) * 1_000_000n),
    };

    if (request.verbose) {
      response.info = {
        info: JSON.stringify({
          sandboxDir: record.dir,
          namespaces: record.pinned,
          shm: record.shmPath ?? null,
          cgroupParent: record.cgroupParent,
          hostname: record.hostname,
          sysctls: record.sysctls,
          infraContainerId: record.infraContainerId ?? null,
          networkSetupMs: record.networkSetupMs ?? null,
          config: record.config,
        }),
      };
    }
    return response;
  }

  private async list(request: ListPodSandboxRequest__Output): Promise<ListPodSandboxResponse> {
    const filter = request.filter;
    const items: PodSandbox[] = [];
    for (const record of this.sandboxes.list()) {
      if (filter?.id && !record.id.startsWith(filter.id)) continue;
      if (filter?.state && criState(record) !== filter.state.state) continue;
      const selector = filter?.label_selector ?? {};
      if (!Object.entries(selector).every(([key, value]) => record.config.labels[key] === value)) continue;

      items.push({
        id: record.id,
        metadata: record.config.metadata,
        state: criState(record),
        created_at: record.createdAtNs,
        labels: record.config.labels,
        annotations: record.config.annotations,
        runtime_handler: record.runtimeHandler,
      });
    }
    return { items };
  }
}

function criState(record: SandboxRecord): 'SANDBOX_READY' | 'SANDBOX_NOTREADY' {
  return record.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY';
}

function requireId(id: string): void {
  if (id === '') throw new InvalidArgumentError('pod_sandbox_id: must not be empty');
}
