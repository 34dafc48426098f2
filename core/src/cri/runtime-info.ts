import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import type { RuntimeHandler, RuntimeHandlerRegistry } from '../runtime/handlers.js';
import type { PodNetworkService } from '../network/service.js';
import type { BerthConfig } from '../config/types.js';
import type { CriHandlerGroup, UnaryHandler } from './handler.js';
import type { VersionResponse } from './generated/runtime/v1/VersionResponse.js';
import type { StatusRequest__Output } from './generated/runtime/v1/StatusRequest.js';
import type { StatusResponse } from './generated/runtime/v1/StatusResponse.js';
import type { RuntimeConfigResponse } from './generated/runtime/v1/RuntimeConfigResponse.js';
import type { RuntimeCondition } from './generated/runtime/v1/RuntimeCondition.js';
import { BERTH_VERSION } from '../version.js';

/** Version of the CRI API berth serves, reported in VersionResponse.runtime_api_version. */
export const CRI_API_VERSION = 'v1';

/** Version, Status and RuntimeConfig: what the kubelet asks before it runs anything. */
@injectable()
export class RuntimeInfoHandlers implements CriHandlerGroup {
  readonly service = 'RuntimeService' as const;

  constructor(
    @inject(Tokens.RuntimeHandlers) private readonly handlers: RuntimeHandlerRegistry,
    @inject(Tokens.PodNetwork) private readonly network: PodNetworkService,
    @inject(Tokens.Config) private readonly config: BerthConfig,
  ) {}

  unary(): Record<string, UnaryHandler> {
    return {
      Version: (() => this.version()) as UnaryHandler,
      Status: ((request: StatusRequest__Output) => this.status(request)) as UnaryHandler,
      RuntimeConfig: (() => this.runtimeConfig()) as UnaryHandler,
    };
  }

  private async version(): Promise<VersionResponse> {
    return {
      version: '0.1.0',
      runtime_name: 'berth',
      runtime_version: BERTH_VERSION,
      runtime_api_version: CRI_API_VERSION,
    };
  }

  private async status(request: StatusRequest__Output): Promise<StatusResponse> {
    const handlers = this.handlers.list();
    const runtimeReady: RuntimeCondition = handlers.length > 0
      ? { type: 'RuntimeReady', status: true, reason: '', message: '' }
      : { type: 'RuntimeReady', status: false, reason: 'NoRuntimeHandler', message: 'no runtime handler is configured' };

    const network = await this.network.status();
    const networkReady: RuntimeCondition = {
      type: 'NetworkReady',
      status: network.ready,
      reason: network.ready ? '' : network.reason ?? 'NetworkNotReady',
      message: network.ready ? '' : network.message ?? '',
    };

    const response: StatusResponse = {
      status: { conditions: [runtimeReady, networkReady] },
      info: {},
      runtime_handlers: handlerEntries(handlers, this.handlers.defaultHandler),
      features: { supplemental_groups_policy: false },
    };

    if (request.verbose) {
      response.info = {
        config: JSON.stringify({
          listen: this.config.listen,
          root: this.config.root,
          runroot: this.config.runroot,
          default_runtime: this.config.default_runtime,
          network_provider: this.config.network.provider,
        }),
        handlers: JSON.stringify(
          Object.fromEntries(handlers.map((handler) => [handler.name, { driver: handler.driverName, ...handler.features }])),
        ),
      };
    }
    return response;
  }

  private async runtimeConfig(): Promise<RuntimeConfigResponse> {
    // berth writes cgroup paths itself (cgroupfs); it does not delegate to systemd.
    return { linux: { cgroup_driver: 'CGROUPFS' } };
  }
}

/**
 * Lists each handler for `Status`, led by an entry with an empty name for the default handler,
 * because CRI reads the empty name as the handler a pod gets when it names none.
 */
function handlerEntries(handlers: RuntimeHandler[], defaultName: string): StatusResponse['runtime_handlers'] {
  const features = { recursive_read_only_mounts: false, user_namespaces: false };
  const entries = handlers.map((handler) => ({ name: handler.name, features: { ...features } }));
  if (handlers.some((handler) => handler.name === defaultName)) entries.unshift({ name: '', features: { ...features } });
  return entries;
}
