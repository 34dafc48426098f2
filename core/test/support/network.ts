import { randomBytes, randomInt } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

/**
 * A CNI network of one test file: a config directory with a bridge list whose bridge name,
 * subnets and host-local store are unique to it, so that tests running at the same time on this
 * machine do not collide. `cleanup` deletes the bridge and the files.
 */
export class TestNetwork {
  readonly bridge = `bn${randomBytes(4).toString('hex')}`;

  private constructor(
    readonly dir: string,
    /** First three octets of the IPv4 /24, e.g. `10.150.7`. */
    readonly prefix: string,
    readonly v6Subnet: string,
  ) {}

  /** Creates the directories and picks a /24 that no host route covers. */
  static async create(): Promise<TestNetwork> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-net-'));
    const routes = (await execa('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
    let prefix = '';
    for (let attempt = 0; attempt < 100 && prefix === ''; attempt++) {
      const candidate = `10.${randomInt(192, 256)}.${randomInt(0, 256)}`;
      if (!routes.includes(`${candidate}.`)) prefix = candidate;
    }
    if (prefix === '') throw new Error('no free 10.192.0.0/10 subnet found for the test');

    // Groups without a leading zero, so that printed addresses start with the prefix as written.
    const group = (): string => randomInt(0x1000, 0x10000).toString(16);
    const network = new TestNetwork(dir, prefix, `fd${randomBytes(1).toString('hex')}:${group()}:${group()}:${group()}::/64`);
    await mkdir(network.confDir, { recursive: true });
    await mkdir(network.binDir, { recursive: true });
    return network;
  }

  get confDir(): string {
    return path.join(this.dir, 'net.d');
  }

  /** Directory for test-only plugin scripts, searched after Debian's plugins. */
  get binDir(): string {
    return path.join(this.dir, 'bin');
  }

  get ipamDir(): string {
    return path.join(this.dir, 'ipam');
  }

  get subnet(): string {
    return `${this.prefix}.0/24`;
  }

  /** Returns the `[plugins.cni]` table for a daemon on this network. */
  options(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return { conf_dirs: [this.confDir], bin_dirs: ['/usr/lib/cni', this.binDir], reload_interval_seconds: 1, ...extra };
  }

  /** Installs an executable Node.js script as plugin `type` in the test bin directory. */
  async writePlugin(type: string, source: string): Promise<void> {
    const file = path.join(this.binDir, type);
    await writeFile(file, `#!${process.execPath}\n${source}`);
    await chmod(file, 0o755);
  }

  /** Writes `body` as is into the config directory as `fileName`. */
  async writeConfig(fileName: string, body: string): Promise<void> {
    await writeFile(path.join(this.confDir, fileName), body);
  }

  /** Writes the bridge + host-local + portmap list (dual stack on request) as `10-test.conflist`. */
  async writeBridgeList(options: { name?: string; dualStack?: boolean; extraPlugins?: Record<string, unknown>[] } = {}): Promise<void> {
    const ranges: unknown[] = [[{ subnet: this.subnet }]];
    const routes: unknown[] = [{ dst: '0.0.0.0/0' }];
    if (options.dualStack) {
      ranges.push([{ subnet: this.v6Subnet }]);
      routes.push({ dst: '::/0' });
    }
    const list = {
      cniVersion: '1.0.0',
      name: options.name ?? 'testnet',
      plugins: [
        { type: 'bridge', bridge: this.bridge, isGateway: true, ipMasq: false, hairpinMode: true, ipam: { type: 'host-local', ranges, routes, dataDir: this.ipamDir } },
        { type: 'portmap', capabilities: { portMappings: true } },
        ...(options.extraPlugins ?? []),
      ],
    };
    await writeFile(path.join(this.confDir, '10-test.conflist'), JSON.stringify(list, null, 2));
  }

  /** Returns the addresses that host-local has allocated for network `name`. */
  async allocations(name = 'testnet'): Promise<string[]> {
    try {
      const names = await readdir(path.join(this.ipamDir, name));
      return names.filter((entry) => entry !== 'lock' && !entry.startsWith('last_reserved_ip')).sort();
    } catch {
      return [];
    }
  }

  /** Returns the names of the veth interfaces attached to the bridge. */
  async veths(): Promise<string[]> {
    const result = await execa('ip', ['-o', 'link', 'show', 'master', this.bridge], { reject: false });
    if (result.exitCode !== 0) return [];
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(':')[1]!.trim().split('@')[0]!);
  }

  async cleanup(): Promise<void> {
    await execa('ip', ['link', 'delete', this.bridge], { reject: false });
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Returns a TCP port that was free on the host a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Returns a command that serves `body` at /index.html on `port` with busybox httpd, in the foreground.
 * (busybox wget of Debian's busybox-static 1.35 crashes with SIGSEGV on this kernel, so clients
 * use `httpGetCommand` with nc instead.)
 */
export function httpServerCommand(port: number, body: string): string[] {
  return ['sh', '-c', `mkdir -p /srv && echo '${body}' > /srv/index.html && exec /bin/busybox httpd -f -p ${port} -h /srv`];
}

/** Returns a command that sends GET /index.html to `host`:`port` with busybox nc and prints the response. */
export function httpGetCommand(host: string, port: number): string[] {
  return ['sh', '-c', `printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${host} ${port}`];
}

/**
 * Source of a CNI plugin that fails ADD with CNI error code 107 and the message in its config's
 * `message` key, and succeeds for every other command.
 */
export const FAILING_PLUGIN = `
const fs = require('node:fs');
const input = fs.readFileSync(0, 'utf8');
if (process.env.CNI_COMMAND === 'VERSION') {
  process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.3.1', '0.4.0', '1.0.0'] }));
} else if (process.env.CNI_COMMAND === 'ADD') {
  const conf = JSON.parse(input);
  process.stdout.write(JSON.stringify({ cniVersion: conf.cniVersion, code: 107, msg: conf.message }));
  process.exit(1);
}
`;

/**
 * Source of a CNI plugin that appends `{ command, env, conf }` as one JSON line to the file in its
 * config's `recordFile` key, and passes `prevResult` on as its own ADD result.
 */
export const RECORDING_PLUGIN = `
const fs = require('node:fs');
const input = fs.readFileSync(0, 'utf8');
if (process.env.CNI_COMMAND === 'VERSION') {
  process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.3.1', '0.4.0', '1.0.0'] }));
} else {
  const conf = JSON.parse(input);
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith('CNI_')));
  fs.appendFileSync(conf.recordFile, JSON.stringify({ command: process.env.CNI_COMMAND, env, conf }) + '\\n');
  if (process.env.CNI_COMMAND === 'ADD') process.stdout.write(JSON.stringify({ cniVersion: conf.cniVersion, ...conf.prevResult }));
}
`;
