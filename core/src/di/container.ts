import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import { closest } from 'fastest-levenshtein';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import { BUILTIN_PLUGINS_DIR } from '../paths.js';
import { loadPlugins, PluginError, type PluginRegistry } from '../plugins/loader.js';
import { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import { PodNetworkService } from '../network/service.js';
import type { NetworkProvider, NetworkProviderFactory } from '../network/provider.js';
import { RuntimeInfoHandlers } from '../cri/runtime-info.js';
import { ImageServiceHandlers } from '../cri/image-service.js';
import { DefaultImageStore } from '../image/default-store.js';
import { PodSandboxHandlers } from '../cri/pod-sandbox.js';
import { ContainerLifecycleHandlers } from '../cri/container-lifecycle.js';
import { ContainerStatusHandlers } from '../cri/container-status.js';
import { ExecHandlers } from '../cri/exec.js';
import { StatsHandlers } from '../cri/stats.js';
import { SandboxService, SandboxStore } from '../sandbox/service.js';
import { ContainerService, ContainerStore } from '../container/service.js';
import { StatsService } from '../container/stats.js';
import { BuiltinSeccompProvider } from '../seccomp/builtin.js';
import type { SeccompProfileProvider, SeccompProfileProviderFactory } from '../seccomp/provider.js';
import { KeyedRwLock } from '../util/keyed-rw-lock.js';
import { Tokens } from './tokens.js';

/** Everything the daemon built at start-up, with one call to release it. */
export interface CoreServices {
  container: DependencyContainer;
  close(): Promise<void>;
}

/**
 * Builds the daemon's dependency container: loads plugins, creates the runtime handlers and the
 * network provider, and registers every service and CRI handler group. This is the only place
 * that decides which implementation serves which interface.
 */
export async function buildContainer(config: BerthConfig, log: Logger): Promise<CoreServices> {
  await mkdir(config.root, { recursive: true, mode: 0o711 });
  await mkdir(config.runroot, { recursive: true, mode: 0o711 });

  const plugins = await loadAndCheckPlugins(config, log);

  const closers: (() => Promise<void>)[] = [];
  const close = async (): Promise<void> => {
    for (const closer of closers.reverse()) {
      try {
        await closer();
      } catch (err) {
        log.error({ err }, 'cannot release a service at shutdown');
      }
    }
  };

  try {
    const handlers = await RuntimeHandlerRegistry.create(config, plugins, log);
    closers.push(() => handlers.close());

    const network = new PodNetworkService(await createNetworkProvider(config, plugins, log));
    closers.push(() => network.close());

    const images = await DefaultImageStore.open(config, log);
    closers.push(() => images.close());

    const container = rootContainer.createChildContainer();
    container.register(Tokens.Config, { useValue: config });
    container.register(Tokens.Logger, { useValue: log });
    container.register(Tokens.Plugins, { useValue: plugins });
    container.register(Tokens.RuntimeHandlers, { useValue: handlers });
    container.register(Tokens.PodNetwork, { useValue: network });
    container.register(Tokens.ImageStore, { useValue: images });

    container.register(Tokens.SeccompProfileProvider, { useValue: await createSeccompProvider(config, plugins, log) });

    container.register(Tokens.SandboxStore, { useValue: new SandboxStore(path.join(config.root, 'sandboxes'), 'pod sandbox') });
    container.register(Tokens.SandboxLocks, { useValue: new KeyedRwLock() });
    container.register(Tokens.ContainerStore, { useValue: new ContainerStore(path.join(config.root, 'containers'), 'container') });
    container.registerSingleton(Tokens.ContainerService, ContainerService);
    container.register(Tokens.SandboxContainers, { useToken: Tokens.ContainerService });
    container.registerSingleton(Tokens.SandboxService, SandboxService);
    container.registerSingleton(Tokens.StatsService, StatsService);

    container.register(Tokens.CriHandlerGroup, { useClass: RuntimeInfoHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: ImageServiceHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: PodSandboxHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: ContainerLifecycleHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: ContainerStatusHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: ExecHandlers });
    container.register(Tokens.CriHandlerGroup, { useClass: StatsHandlers });

    // Containers first: recovering a half-created sandbox removes its containers.
    await container.resolve(Tokens.ContainerService).recover(log);
    await container.resolve(Tokens.SandboxService).recover(log);

    return { container, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function createNetworkProvider(config: BerthConfig, plugins: PluginRegistry, log: Logger): Promise<NetworkProvider | undefined> {
  const name = config.network.provider;
  if (name === '') {
    log.warn('network.provider is empty: pods can only use the host network');
    return undefined;
  }

  const provision = plugins.require('network-provider', name, 'network.provider');
  const options = provision.checkOptions(config.plugins[name] ?? {}, `plugins.${name}`);
  const factory = provision.factory as unknown as NetworkProviderFactory;
  const stateDir = `${config.runroot}/network/${name}`;
  const dataDir = `${config.root}/network/${name}`;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  return factory.create(options, { stateDir, dataDir, log: log.child({ network_provider: name }) });
}

async function createSeccompProvider(config: BerthConfig, plugins: PluginRegistry, log: Logger): Promise<SeccompProfileProvider> {
  const name = config.seccomp.provider;
  if (name === 'builtin') return BuiltinSeccompProvider.create(config.seccomp.profile, log.child({ seccomp_provider: name }));

  const provision = plugins.require('seccomp-profile-provider', name, 'seccomp.provider');
  const options = provision.checkOptions(config.plugins[name] ?? {}, `plugins.${name}`);
  const factory = provision.factory as unknown as SeccompProfileProviderFactory;
  return factory.create(options, { log: log.child({ seccomp_provider: name }) });
}

/**
 * Loads the built-in plugins and those in `plugin_dirs`, then checks every part of `config` that
 * names a plugin (handlers, network and seccomp providers, `plugins.<name>` tables) and each
 * plugin's options, without creating anything. Throws PluginError at the first problem.
 */
export async function loadAndCheckPlugins(config: BerthConfig, log: Logger): Promise<PluginRegistry> {
  const plugins = await loadPlugins(
    [{ dir: BUILTIN_PLUGINS_DIR, builtin: true }, ...config.plugin_dirs.map((dir) => ({ dir, builtin: false }))],
    log,
  );
  checkPluginTables(config, plugins);

  for (const [name, entry] of Object.entries(config.runtimes)) {
    plugins.require('runtime-driver', entry.driver, `runtimes.${name}.driver`).checkOptions(entry.options ?? {}, `runtimes.${name}.options`);
  }
  if (config.network.provider !== '') {
    const name = config.network.provider;
    plugins.require('network-provider', name, 'network.provider').checkOptions(config.plugins[name] ?? {}, `plugins.${name}`);
  }
  if (config.seccomp.provider !== 'builtin') {
    const name = config.seccomp.provider;
    plugins.require('seccomp-profile-provider', name, 'seccomp.provider').checkOptions(config.plugins[name] ?? {}, `plugins.${name}`);
  }
  return plugins;
}

/** Rejects a `plugins.<name>` table that no loaded plugin provides, suggesting the nearest name. */
function checkPluginTables(config: BerthConfig, plugins: PluginRegistry): void {
  const known = [...plugins.names('network-provider'), ...plugins.names('seccomp-profile-provider')];
  for (const name of Object.keys(config.plugins)) {
    if (known.includes(name)) continue;
    const hint = known.length > 0 ? `; did you mean "${closest(name, known)}"?` : '';
    throw new PluginError(`plugins.${name}: no loaded network or seccomp plugin is named "${name}"${hint}`);
  }
}
