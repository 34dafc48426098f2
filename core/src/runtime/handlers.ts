import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import { InvalidArgumentError, errorMessage } from '../errors.js';
import { PluginError, type PluginRegistry } from '../plugins/loader.js';
import type { DriverFeatures, RuntimeDriver, RuntimeDriverFactory } from './driver.js';

/** Directory where monitors write container exit codes: `runtime.container_exits_dir` or `<runroot>/exits`. */
export function containerExitsDir(config: BerthConfig): string {
  return config.runtime.container_exits_dir || path.join(config.runroot, 'exits');
}

export interface RuntimeHandler {
  name: string;
  driverName: string;
  driver: RuntimeDriver;
  features: DriverFeatures;
}

/**
 * The runtime handler table: one driver instance per configured RuntimeClass handler, created at
 * start-up so that a missing binary or invalid option stops the daemon instead of a pod.
 */
export class RuntimeHandlerRegistry {
  private constructor(
    private readonly handlers: Map<string, RuntimeHandler>,
    readonly defaultHandler: string,
  ) {}

  static async create(config: BerthConfig, plugins: PluginRegistry, log: Logger): Promise<RuntimeHandlerRegistry> {
    const handlers = new Map<string, RuntimeHandler>();

    try {
      for (const [name, entry] of Object.entries(config.runtimes).sort(([a], [b]) => a.localeCompare(b))) {
        const provision = plugins.require('runtime-driver', entry.driver, `runtimes.${name}.driver`);
        const options = provision.checkOptions(entry.options ?? {}, `runtimes.${name}.options`);
        const stateDir = path.join(config.runroot, 'runtimes', name);
        await mkdir(stateDir, { recursive: true, mode: 0o700 });

        const handlerLog = log.child({ handler: name, driver: entry.driver });
        const factory = provision.factory as unknown as RuntimeDriverFactory;
        let driver: RuntimeDriver;
        try {
          driver = await factory.create(options, {
            handler: name,
            stateDir,
            conmonPath: config.runtime.conmon,
            exitsDir: containerExitsDir(config),
            log: handlerLog,
          });
        } catch (err) {
          throw new PluginError(`runtimes.${name}: driver "${entry.driver}" cannot start: ${errorMessage(err)}`);
        }
        const features = await driver.features();
        handlers.set(name, { name, driverName: entry.driver, driver, features });
        handlerLog.info({ runtime: features.runtime }, 'runtime handler ready');
      }
    } catch (err) {
      await Promise.allSettled([...handlers.values()].map((handler) => handler.driver.close()));
      throw err;
    }

    return new RuntimeHandlerRegistry(handlers, config.default_runtime);
  }

  /** Returns the handler for `name`; an empty name selects the default handler. */
  get(name: string): RuntimeHandler {
    const handler = this.handlers.get(name === '' ? this.defaultHandler : name);
    if (!handler) {
      throw new InvalidArgumentError(
        `runtime handler "${name}" is not configured (configured: ${this.names().join(', ')})`,
      );
    }
    return handler;
  }

  names(): string[] {
    return [...this.handlers.keys()];
  }

  list(): RuntimeHandler[] {
    return [...this.handlers.values()];
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.list().map((handler) => handler.driver.close()));
  }
}
