import type { Logger } from './log.js';
import type { BerthConfig } from './config/types.js';
import { buildContainer, type CoreServices } from './di/container.js';
import { Tokens } from './di/tokens.js';
import { CriServer } from './cri/server.js';

/** A running daemon: the CRI server and the services behind it. */
export class Daemon {
  private constructor(
    private readonly server: CriServer,
    private readonly services: CoreServices,
    private readonly log: Logger,
  ) {}

  /** Builds every service and starts serving; releases what it built if any step fails. */
  static async start(config: BerthConfig, log: Logger): Promise<Daemon> {
    const services = await buildContainer(config, log);
    try {
      const groups = services.container.resolveAll(Tokens.CriHandlerGroup);
      const server = new CriServer(config.listen, groups, log);
      await server.start();
      return new Daemon(server, services, log);
    } catch (err) {
      await services.close();
      throw err;
    }
  }

  /** Stops accepting calls, waits for in-flight ones, then releases services. Containers keep running. */
  async stop(): Promise<void> {
    await this.server.stop();
    await this.services.close();
    this.log.info('daemon stopped');
  }
}
