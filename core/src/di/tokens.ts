import type { InjectionToken } from 'tsyringe';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import type { ImageStore } from '../image/store.js';
import type { PodNetworkService } from '../network/service.js';
import type { SeccompProfileProvider } from '../seccomp/provider.js';
import type { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import type { PluginRegistry } from '../plugins/loader.js';
import type { CriHandlerGroup } from '../cri/handler.js';
import type { SandboxContainers, SandboxService, SandboxStore } from '../sandbox/service.js';
import type { ContainerService, ContainerStore } from '../container/service.js';
import type { StatsService } from '../container/stats.js';
import type { KeyedRwLock } from '../util/keyed-rw-lock.js';

/**
 * Injection tokens for the core's interfaces. di/container.ts registers their implementations.
 *
 * RuntimeDriver and NetworkProvider have no token of their own. A node runs one driver per
 * runtime handler, so services reach drivers through the handler registry
 * (`RuntimeHandlers.get(handler).driver`). The network provider is optional, so services reach
 * it through PodNetworkService, which also handles a node without one.
 */
export const Tokens = {
  Config: Symbol('BerthConfig') as InjectionToken<BerthConfig>,
  Logger: Symbol('Logger') as InjectionToken<Logger>,
  Plugins: Symbol('PluginRegistry') as InjectionToken<PluginRegistry>,
  RuntimeHandlers: Symbol('RuntimeHandlerRegistry') as InjectionToken<RuntimeHandlerRegistry>,
  ImageStore: Symbol('ImageStore') as InjectionToken<ImageStore>,
  PodNetwork: Symbol('PodNetworkService') as InjectionToken<PodNetworkService>,
  SeccompProfileProvider: Symbol('SeccompProfileProvider') as InjectionToken<SeccompProfileProvider>,
  SandboxStore: Symbol('SandboxStore') as InjectionToken<SandboxStore>,
  ContainerStore: Symbol('ContainerStore') as InjectionToken<ContainerStore>,
  SandboxService: Symbol('SandboxService') as InjectionToken<SandboxService>,
  /**
   * Readers-writer lock per pod sandbox id: creating or starting a container holds it shared,
   * StopPodSandbox and RemovePodSandbox hold it exclusively.
   */
  SandboxLocks: Symbol('SandboxLocks') as InjectionToken<KeyedRwLock>,
  /** The container service seen from the sandbox service: stop, remove and infra containers. */
  SandboxContainers: Symbol('SandboxContainers') as InjectionToken<SandboxContainers>,
  ContainerService: Symbol('ContainerService') as InjectionToken<ContainerService>,
  StatsService: Symbol('StatsService') as InjectionToken<StatsService>,
  /** Every group of CRI handlers; the server resolves them all. */
  CriHandlerGroup: Symbol('CriHandlerGroup') as InjectionToken<CriHandlerGroup>,
} as const;
