import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import type { ContainerService } from '../container/service.js';
import type { ContainerRecord } from '../container/record.js';
import { SIGTERM, criSignalName, storedStopSignal } from '../container/signals.js';
import type { CriHandlerGroup, RequestContext, UnaryHandler } from './handler.js';
import { requireId } from './container-lifecycle.js';
import type { ContainerStatusRequest__Output } from './generated/runtime/v1/ContainerStatusRequest.js';
import type { ContainerStatusResponse } from './generated/runtime/v1/ContainerStatusResponse.js';
import type { ListContainersRequest__Output } from './generated/runtime/v1/ListContainersRequest.js';
import type { ListContainersResponse } from './generated/runtime/v1/ListContainersResponse.js';
import type { UpdateContainerResourcesRequest__Output } from './generated/runtime/v1/UpdateContainerResourcesRequest.js';
import type { ReopenContainerLogRequest__Output } from './generated/runtime/v1/ReopenContainerLogRequest.js';
import type { ContainerState } from './generated/runtime/v1/ContainerState.js';

const STATES = { created: 'CONTAINER_CREATED', running: 'CONTAINER_RUNNING', exited: 'CONTAINER_EXITED' } as const;

/** ContainerStatus, ListContainers, UpdateContainerResources and ReopenContainerLog. */
@injectable()
export class ContainerStatusHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(@inject(Tokens.ContainerService) private readonly containers: ContainerService) {}

  unary(): Record<string, UnaryHandler> {
    return {
      ContainerStatus: ((request: ContainerStatusRequest__Output, context: RequestContext) => this.status(request, context)) as UnaryHandler,
      ListContainers: ((request: ListContainersRequest__Output, context: RequestContext) => this.list(request, context)) as UnaryHandler,
      UpdateContainerResources: ((request: UpdateContainerResourcesRequest__Output, context: RequestContext) => this.update(request, context)) as UnaryHandler,
      ReopenContainerLog: ((request: ReopenContainerLogRequest__Output, context: RequestContext) => this.reopenLog(request, context)) as UnaryHandler,
    };
  }

  private async status(request: ContainerStatusRequest__Output, context: RequestContext): Promise<ContainerStatusResponse> {
    requireId(request.container_id);
    const record = await this.containers.status(request.container_id, context.log);
    const response: ContainerStatusResponse = {
      status: {
        id: record.id,
        metadata: record.config.metadata,
        state: criState(record),
        created_at: record.createdAtNs,
        started_at: record.startedAtNs ?? '0',
        finished_at: record.finishedAtNs ?? '0',
        exit_code: record.exitCode ?? 0,
        image: { image: record.imageName, annotations: record.config.image?.annotations ?? {}, user_specified_image: record.config.image?.user_specified_image ?? '' },
        image_ref: record.imageRef,
        image_id: record.imageId,
        reason: record.reason ?? '',
        message: record.message ?? '',
        labels: record.config.labels,
        annotations: record.config.annotations,
        mounts: record.config.mounts,
        log_path: record.logPath ?? '',
        resources: record.resources ? { linux: record.resources } : null,
        user: { linux: { uid: record.user.uid, gid: record.user.gid, supplemental_groups: record.user.additionalGids } },
        stop_signal: (criSignalName(storedStopSignal(record.stopSignal) ?? SIGTERM) ?? 'RUNTIME_DEFAULT') as never,
      },
      info: {},
    };

    if (request.verbose) {
      let runtimeSpec: unknown = null;
      try {
        runtimeSpec = JSON.parse(await readFile(path.join(record.bundlePath, 'config.json'), 'utf8'));
      } catch (err) {
        context.log.debug({ err }, 'bundle config.json not readable for verbose status');
      }
      response.info = {
        info: JSON.stringify({
          sandboxID: record.sandboxId,
          runtimeHandler: record.runtimeHandler,
          bundlePath: record.bundlePath,
          cgroupsPath: record.cgroupsPath,
          runtimeSpec,
        }),
      };
    }
    return response;
  }

  private async list(request: ListContainersRequest__Output, context: RequestContext): Promise<ListContainersResponse> {
    const filter = request.filter;
    const wanted = filter?.state ? filter.state.state : undefined;
    const records = await this.containers.list(
      {
        id: filter?.id || undefined,
        sandboxId: filter?.pod_sandbox_id || undefined,
        labels: filter?.label_selector,
        state: wanted === undefined || wanted === 'CONTAINER_UNKNOWN' ? undefined : (Object.entries(STATES).find(([, value]) => value === wanted)?.[0] as 'created' | 'running' | 'exited'),
      },
      context.log,
    );
    const matching = wanted === 'CONTAINER_UNKNOWN' ? [] : records;

    return {
      containers: matching.map((record) => ({
        id: record.id,
        pod_sandbox_id: record.sandboxId,
        metadata: record.config.metadata,
        image: { image: record.imageName, annotations: record.config.image?.annotations ?? {}, user_specified_image: record.config.image?.user_specified_image ?? '' },
        image_ref: record.imageRef,
        image_id: record.imageId,
        state: criState(record),
        created_at: record.createdAtNs,
        labels: record.config.labels,
        annotations: record.config.annotations,
      })),
    };
  }

  private async update(request: UpdateContainerResourcesRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.container_id);
    await this.containers.updateResources(request.container_id, request.linux, context.log);
    return {};
  }

  private async reopenLog(request: ReopenContainerLogRequest__Output, context: RequestContext): Promise<object> {
    requireId(request.container_id);
    await this.containers.reopenLog(request.container_id, context.log);
    return {};
  }
}

function criState(record: ContainerRecord): ContainerState {
  return record.state === 'creating' ? 'CONTAINER_UNKNOWN' : STATES[record.state];
}
