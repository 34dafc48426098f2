import type { Logger } from './log.js';
import type { BerthConfig } from './config/types.js';
import { buildContainer, type CoreServices } from './di/container.js';
import { Tokens } from './di/tokens.js';
import { CriServer, prepareSocketPath } from './cri/server.js';
import { lockStateDir } from './state/lock.js';

/** A running daemon: the CRI server and the services behind it. */
export class Daemon {
  private constructor(
    private readonly server: CriServer,
    private readonly services: CoreServices,
    private readonly releaseLocks: () => Promise<void>,
    private readonly log: Logger,
  ) {}

  /**
   * Builds every service and starts serving; releases what it built if any step fails. A live
   * daemon on the same socket or state directories stops start-up before recovery touches state.
   */
  static async start(config: BerthConfig, log: Logger): Promise<Daemon> {
    await prepareSocketPath(config.listen);
    const releaseLocks = await lockStateDirs([config.root, config.runroot]);

    let services: CoreServices | undefined;
    try {
      services = await buildContainer(config, log);
      const groups = services.container.resolveAll(Tokens.CriHandlerGroup);
      const server = new CriServer(config.listen, groups, log);
      await server.start();
      return new Daemon(server, services, releaseLocks, log);
    } catch (err) {
      await services?.close();
      await releaseLocks();
      throw err;
    }
  }

  /** Stops accepting calls, waits for in-flight ones, then releases services. Containers keep running. */
  async stop(): Promise<void> {
    await this.server.stop();
    await this.services.close();
    await this.releaseLocks();
    this.log.info('daemon stopped');
  }
}

async function lockStateDirs(dirs: string[]): Promise<() => Promise<void>> {
  const releases: (() => Promise<void>)[] = [];
  const releaseAll = async (): Promise<void> => {
    for (const release of releases.reverse()) await release();
  };
  try {
    for (const dir of new Set(dirs)) releases.push(await lockStateDir(dir));
  } catch (err) {
    await releaseAll();
    throw err;
  }
  return releaseAll;
}
