import { randomBytes, randomInt } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { execa, type ResultPromise } from 'execa';
import { pino } from 'pino';
import type { Logger, PodNetworkRequest, PortMapping } from '@berth/core';
import { CniNetworkProvider } from '../../src/provider.js';
import { resolveOptions, type CniOptions } from '../../src/options.js';

/** Top of the berth checkout; this file is compiled to plugins/cni/dist/test/support/harness.js. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../..');

/** Where Debian's containernetworking-plugins package installs the plugins. */
export const SYSTEM_BIN_DIR = '/usr/lib/cni';

/** Log records captured from a logger, parsed from pino's JSON lines. */
export class LogCapture {
  readonly records: Record<string, unknown>[] = [];
  readonly logger: Logger;

  constructor() {
    const records = this.records;
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString().split('\n')) {
          if (line.startsWith('{')) records.push(JSON.parse(line) as Record<string, unknown>);
        }
        callback();
      },
    });
    this.logger = pino({ level: 'debug' }, stream);
  }

  /** Records whose `msg` contains `text`. */
  find(text: string): Record<string, unknown>[] {
    return this.records.filter((record) => String(record.msg ?? '').includes(text));
  }
}

/** Runs a command and returns its stdout; throws with its stderr when it fails. */
export async function run(command: string, args: string[]): Promise<string> {
  const result = await execa(command, args, { reject: false });
  if (result.exitCode !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed with exit code ${result.exitCode}: ${result.stderr}`);
  }
  return result.stdout;
}

/** Random lowercase hex of `bytes` bytes. */
export function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/**
 * Picks a random 10.x.y.0/24 that no route on the host covers, so that tests running at the
 * same time on this machine, and the host's own networks, do not overlap it.
 */
export async function pickSubnet(): Promise<{ subnet: string; prefix: string }> {
  const routes = await run('ip', ['-4', 'route', 'show', 'table', 'all']);
  for (let attempt = 0; attempt < 100; attempt++) {
    const second = 128 + Math.floor(Math.random() * 64);
    const third = Math.floor(Math.random() * 256);
    const prefix = `10.${second}.${third}`;
    if (!routes.includes(`${prefix}.`)) return { subnet: `${prefix}.0/24`, prefix };
  }
  throw new Error('no free 10.128.0.0/10 subnet found for the test');
}

/** Returns a random unique-local IPv6 /64, outside the fd00::/64 that the host's own interface may use. */
export function pickV6Subnet(): string {
  // Groups of four hex digits without a leading zero, so that addresses print as the prefix reads.
  const group = (): string => randomInt(0x1000, 0x10000).toString(16);
  return `fd${hex(1)}:${group()}:${group()}:${group()}::/64`;
}

export interface BridgeNetworkOptions {
  name?: string;
  /** Bridge device; defaults to the harness's own. Another name must come from `extraBridge`. */
  bridge?: string;
  fileName?: string;
  cniVersion?: string;
  /** Adds the portmap plugin. */
  portmap?: boolean;
  /** Adds the bandwidth plugin. */
  bandwidth?: boolean;
  /** Adds an IPv6 range next to the IPv4 one. */
  dualStack?: boolean;
  /** Replaces the IPv4 subnet, e.g. with a /30 to exhaust it. */
  subnet?: string;
  /** Extra plugins appended to the list. */
  extraPlugins?: Record<string, unknown>[];
}

export interface StartedProcess {
  pid: number;
  process: ResultPromise;
}

/**
 * Host-wide resources of one test file, each unique to it: a bridge name, subnets, network
 * namespaces, a config directory and IPAM store under a temp directory. `cleanup` removes all of
 * them, also after a failed test.
 */
export class NetworkHarness {
  readonly bridge = `bc${hex(4)}`;
  private readonly extraBridges: string[] = [];
  readonly v6Subnet = pickV6Subnet();
  readonly providers: CniNetworkProvider[] = [];
  readonly netnsNames: string[] = [];
  readonly processes: StartedProcess[] = [];
  /** Sandboxes set up through `provider`, torn down at cleanup in case a test failed midway. */
  readonly requests = new Map<string, { provider: CniNetworkProvider; request: PodNetworkRequest }>();
  readonly log = new LogCapture();

  private constructor(
    readonly dir: string,
    readonly subnet: string,
    readonly prefix: string,
  ) {}

  static async create(): Promise<NetworkHarness> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-cni-test-'));
    const { subnet, prefix } = await pickSubnet();
    const harness = new NetworkHarness(dir, subnet, prefix);
    await mkdir(harness.confDir, { recursive: true });
    await mkdir(harness.binDir, { recursive: true });
    return harness;
  }

  get confDir(): string {
    return path.join(this.dir, 'net.d');
  }

  /** Directory for test-only plugin scripts, searched after the system plugins. */
  get binDir(): string {
    return path.join(this.dir, 'bin');
  }

  get cacheDir(): string {
    return path.join(this.dir, 'cache');
  }

  get ipamDir(): string {
    return path.join(this.dir, 'ipam');
  }

  /** Returns the bridge + host-local (+ portmap, bandwidth) list as a plain object. */
  bridgeList(options: BridgeNetworkOptions = {}): Record<string, unknown> {
    const ranges: unknown[] = [[{ subnet: options.subnet ?? this.subnet }]];
    const routes: unknown[] = [{ dst: '0.0.0.0/0' }];
    if (options.dualStack) {
      ranges.push([{ subnet: this.v6Subnet }]);
      routes.push({ dst: '::/0' });
    }

    const plugins: Record<string, unknown>[] = [
      {
        type: 'bridge',
        bridge: options.bridge ?? this.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges, routes, dataDir: this.ipamDir },
      },
    ];
    if (options.portmap) plugins.push({ type: 'portmap', capabilities: { portMappings: true } });
    if (options.bandwidth) plugins.push({ type: 'bandwidth', capabilities: { bandwidth: true } });
    plugins.push(...(options.extraPlugins ?? []));

    return { cniVersion: options.cniVersion ?? '1.0.0', name: options.name ?? 'testnet', plugins };
  }

  /** Writes a bridge list into the config directory and returns its path. */
  async writeBridgeList(options: BridgeNetworkOptions = {}): Promise<string> {
    return this.writeConfig(options.fileName ?? '10-test.conflist', this.bridgeList(options));
  }

  /** Writes a config file (an object as JSON, a string as is) into the config directory. */
  async writeConfig(fileName: string, body: Record<string, unknown> | string): Promise<string> {
    const file = path.join(this.confDir, fileName);
    await writeFile(file, typeof body === 'string' ? body : JSON.stringify(body, null, 2));
    return file;
  }

  /** Installs an executable Node.js script as plugin `type` in the test bin directory. */
  async writePlugin(type: string, source: string): Promise<string> {
    const file = path.join(this.binDir, type);
    await writeFile(file, `#!${process.execPath}\n${source}`);
    await chmod(file, 0o755);
    return file;
  }

  /** Creates a provider on this harness's directories; closed at cleanup. */
  async provider(overrides: Partial<CniOptions> = {}): Promise<CniNetworkProvider> {
    const options = resolveOptions({
      conf_dirs: [this.confDir],
      bin_dirs: [SYSTEM_BIN_DIR, this.binDir],
      cache_dir: this.cacheDir,
      reload_interval_seconds: 1,
      plugin_timeout_seconds: 30,
      ...overrides,
    });
    const provider = await CniNetworkProvider.create(options, {
      stateDir: path.join(this.dir, 'state'),
      dataDir: path.join(this.dir, 'data'),
      log: this.log.logger,
    });
    this.providers.push(provider);
    return provider;
  }

  /** Creates a network namespace with a unique name and returns its pinned path. */
  async netns(): Promise<{ name: string; path: string }> {
    const name = `berth-cni-${hex(5)}`;
    await run('ip', ['netns', 'add', name]);
    this.netnsNames.push(name);
    return { name, path: `/run/netns/${name}` };
  }

  async deleteNetns(name: string): Promise<void> {
    await run('ip', ['netns', 'delete', name]);
    this.netnsNames.splice(this.netnsNames.indexOf(name), 1);
  }

  /** Returns a set-up request for a new sandbox in namespace `netnsPath`. */
  request(netnsPath: string, overrides: Partial<PodNetworkRequest> = {}): PodNetworkRequest {
    const sandboxId = hex(32);
    return {
      sandboxId,
      podName: `pod-${sandboxId.slice(0, 6)}`,
      podNamespace: 'default',
      podUid: `${hex(4)}-${hex(2)}-${hex(2)}-${hex(2)}-${hex(6)}`,
      netnsPath,
      portMappings: [] as PortMapping[],
      annotations: {},
      log: this.log.logger.child({ sandbox_id: sandboxId }),
      ...overrides,
    };
  }

  /** Sets up a sandbox and remembers it, so that cleanup tears it down if the test does not. */
  async setUp(provider: CniNetworkProvider, request: PodNetworkRequest): Promise<string[]> {
    this.requests.set(request.sandboxId, { provider, request });
    const result = await provider.setUp(request);
    return result.ips;
  }

  async tearDown(provider: CniNetworkProvider, request: PodNetworkRequest): Promise<void> {
    await provider.tearDown(request);
    this.requests.delete(request.sandboxId);
  }

  /** Addresses host-local holds for network `name`: one file per allocated address. */
  async allocations(name = 'testnet'): Promise<string[]> {
    try {
      const entries = await readdir(path.join(this.ipamDir, name));
      return entries.filter((entry) => entry !== 'lock' && !entry.startsWith('last_reserved_ip')).sort();
    } catch {
      return [];
    }
  }

  /** Returns a further unique bridge name, deleted at cleanup. */
  extraBridge(): string {
    const name = `bc${hex(4)}`;
    this.extraBridges.push(name);
    return name;
  }

  /** Names of the veth interfaces attached to a bridge, by default this harness's. */
  async veths(bridge = this.bridge): Promise<string[]> {
    const result = await execa('ip', ['-o', 'link', 'show', 'master', bridge], { reject: false });
    if (result.exitCode !== 0) return [];
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(':')[1]!.trim().split('@')[0]!);
  }

  /** Runs a command inside namespace `name`. */
  async inNetns(name: string, args: string[], timeoutMs = 10_000): Promise<{ exitCode?: number; stdout: string; stderr: string }> {
    const result = await execa('ip', ['netns', 'exec', name, ...args], { reject: false, timeout: timeoutMs });
    return { exitCode: result.exitCode, stdout: String(result.stdout), stderr: String(result.stderr) };
  }

  /**
   * Starts busybox httpd inside namespace `name`, serving `body` at /index.html on `port`, and
   * waits until it accepts connections.
   */
  async startHttpServer(name: string, port: number, body: string): Promise<void> {
    const root = path.join(this.dir, `www-${name}-${port}`);
    await mkdir(root, { recursive: true });
    await writeFile(path.join(root, 'index.html'), body);

    const child = execa('ip', ['netns', 'exec', name, 'busybox', 'httpd', '-f', '-p', String(port), '-h', root], { reject: false });
    this.processes.push({ pid: child.pid!, process: child });

    for (let attempt = 0; attempt < 50; attempt++) {
      if ((await this.httpGet(name, '127.0.0.1', port)) === body) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`busybox httpd in ${name} did not listen on port ${port}`);
  }

  /**
   * Sends an HTTP GET from inside namespace `name` with busybox nc and returns the body, or the
   * error text prefixed with "failed:". (busybox wget of Debian's busybox-static 1.35 crashes with
   * SIGSEGV on this kernel, so nc speaks HTTP/1.0 itself.)
   */
  async httpGet(name: string, host: string, port: number): Promise<string> {
    const result = await execa('ip', ['netns', 'exec', name, 'busybox', 'nc', '-w', '3', host, String(port)], {
      input: 'GET /index.html HTTP/1.0\r\n\r\n',
      reject: false,
      timeout: 10_000,
    });
    const response = String(result.stdout);
    const separator = response.indexOf('\r\n\r\n');
    if (result.exitCode !== 0 || !response.startsWith('HTTP/1.') || separator === -1) {
      return `failed: exit code ${result.exitCode}: ${String(result.stderr).trim()}`;
    }
    return response.slice(separator + 4);
  }

  /** Host-side name of the veth whose peer is eth0 in namespace `name`. */
  async hostVeth(name: string): Promise<string> {
    const link = await this.inNetns(name, ['ip', '-o', 'link', 'show', 'eth0']);
    const peerIndex = /eth0@if(\d+)/.exec(link.stdout)?.[1];
    if (!peerIndex) throw new Error(`no veth peer of eth0 in ${name}: ${link.stdout} ${link.stderr}`);
    const hostLinks = await run('ip', ['-o', 'link', 'show']);
    const line = hostLinks.split('\n').find((entry) => entry.startsWith(`${peerIndex}: `));
    if (!line) throw new Error(`no host interface with index ${peerIndex}`);
    return line.split(':')[1]!.trim().split('@')[0]!;
  }

  /** Removes everything the test made: sandboxes, providers, processes, namespaces, bridge, files. */
  async cleanup(): Promise<void> {
    for (const { provider, request } of this.requests.values()) {
      await provider.tearDown(request).catch(() => undefined);
    }
    this.requests.clear();

    for (const provider of this.providers) await provider.close();

    for (const started of this.processes) {
      try {
        process.kill(started.pid, 'SIGKILL');
      } catch {
        // Already exited.
      }
      await started.process;
    }

    for (const name of [...this.netnsNames]) {
      await execa('ip', ['netns', 'delete', name], { reject: false });
    }
    this.netnsNames.length = 0;

    for (const bridge of [this.bridge, ...this.extraBridges]) {
      await execa('ip', ['link', 'delete', bridge], { reject: false });
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
