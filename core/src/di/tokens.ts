import type { InjectionToken } from 'tsyringe';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import type { ImageStore } from '../image/store.js';
import type { PodNetworkService } from '../network/service.js';
import type { SeccompProfileProvider } from '../seccomp/provider.js';
import type { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import type { PluginRegistry } from '../plugins/loader.js';
import type { CriHandlerGroup } from '../cri/handler.js';

/** Injection tokens for the core's interfaces; implementations are registered in di/container.ts. */
export const Tokens = {
  Config: Symbol('BerthConfig') as InjectionToken<BerthConfig>,
  Logger: Symbol('Logger') as InjectionToken<Logger>,
  Plugins: Symbol('PluginRegistry') as InjectionToken<PluginRegistry>,
  RuntimeHandlers: Symbol('RuntimeHandlerRegistry') as InjectionToken<RuntimeHandlerRegistry>,
  ImageStore: Symbol('ImageStore') as InjectionToken<ImageStore>,
  PodNetwork: Symbol('PodNetworkService') as InjectionToken<PodNetworkService>,
  SeccompProfileProvider: Symbol('SeccompProfileProvider') as InjectionToken<SeccompProfileProvider>,
  /** Every group of CRI handlers; the server resolves them all. */
  CriHandlerGroup: Symbol('CriHandlerGroup') as InjectionToken<CriHandlerGroup>,
} as const;
