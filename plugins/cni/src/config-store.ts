import { watch, type FSWatcher } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, isErrno, type Logger, type NetworkStatus } from '@berth/core';
import { CONFIG_EXTENSIONS, InvalidNetworkConfig, parseNetworkConfig, requiredBinaries } from './network-config.js';
import type { PluginInvoker } from './plugin-exec.js';
import type { NetworkConfList, VersionInfo } from './spec.js';

/** A valid network config and the file it came from. */
export interface LoadedNetwork {
  file: string;
  list: NetworkConfList;
}

export interface SkippedFile {
  file: string;
  reason: string;
}

/** The result of one read of the config directories. */
export interface ConfigSnapshot {
  /** Valid networks in the order they were read. */
  networks: LoadedNetwork[];
  skipped: SkippedFile[];
  /** The network pods join; undefined while none is usable. */
  defaultNetwork?: LoadedNetwork;
  status: NetworkStatus;
}

export interface ConfigStoreOptions {
  confDirs: string[];
  defaultNetwork: string;
  reloadIntervalMs: number;
  invoker: PluginInvoker;
  log: Logger;
}

/** Events closer together than this cause one reload; editors write a file in several steps. */
const DEBOUNCE_MS = 100;

/**
 * Network configs of the config directories, kept current. A reload follows every file system
 * event in a directory (debounced), and a poll compares names, sizes and modification times of
 * the config files and plugin binaries, which also covers directories created after start-up.
 */
export class ConfigStore {
  private snapshot: ConfigSnapshot = {
    networks: [],
    skipped: [],
    status: { ready: false, reason: 'NetworkConfigNotLoaded', message: 'CNI network configs have not been read yet' },
  };
  private fingerprint = '';
  private readonly watchers = new Map<string, FSWatcher>();
  private pollTimer?: NodeJS.Timeout;
  private debounceTimer?: NodeJS.Timeout;
  private inFlight?: Promise<void>;
  private queued?: Promise<ConfigSnapshot>;
  private closed = false;
  private readonly versionCache = new Map<string, { key: string; info: VersionInfo }>();

  constructor(private readonly options: ConfigStoreOptions) {}

  /** Reads the directories once and starts watching them. */
  async start(): Promise<void> {
    await this.reload();
    this.pollTimer = setInterval(() => this.requestReload(), this.options.reloadIntervalMs);
    this.pollTimer.unref();
  }

  current(): ConfigSnapshot {
    return this.snapshot;
  }

  /**
   * Re-reads the directories when anything in them or in the bin directories changed since the
   * last read, and waits for it. A call made while a read runs waits for one more read that
   * starts after it, shared with the other calls made meanwhile.
   */
  async reload(): Promise<ConfigSnapshot> {
    if (this.inFlight) {
      this.queued ??= this.inFlight
        .catch(() => undefined)
        .then(() => {
          this.queued = undefined;
          return this.reload();
        });
      return this.queued;
    }

    this.inFlight = this.readOnce();
    try {
      await this.inFlight;
    } finally {
      this.inFlight = undefined;
    }
    return this.snapshot;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pollTimer);
    clearTimeout(this.debounceTimer);
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    await Promise.allSettled([this.inFlight, this.queued]);
  }

  private requestReload(): void {
    if (this.closed) return;
    this.reload().catch((err: unknown) => this.options.log.error({ err }, 'cannot reload CNI network configs'));
  }

  private scheduleReload(): void {
    clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => this.requestReload(), DEBOUNCE_MS);
    this.debounceTimer.unref();
  }

  private async readOnce(): Promise<void> {
    this.updateWatchers();
    const fingerprint = await this.computeFingerprint();
    if (fingerprint === this.fingerprint) return;

    const snapshot = await this.load();
    this.fingerprint = fingerprint;
    this.snapshot = snapshot;
    this.logSnapshot(snapshot);
  }

  /** Watches each config directory that exists; a directory created later is picked up by the poll. */
  private updateWatchers(): void {
    if (this.closed) return;
    for (const dir of this.options.confDirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const watcher = watch(dir, { persistent: false }, () => this.scheduleReload());
        watcher.on('error', (err) => {
          this.options.log.warn({ err, dir }, 'CNI config directory watch failed; changes are seen by polling');
          watcher.close();
          this.watchers.delete(dir);
        });
        this.watchers.set(dir, watcher);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) this.options.log.warn({ err, dir }, 'cannot watch CNI config directory; changes are seen by polling');
      }
    }
  }

  /** Names, sizes and modification times of config files and plugin binaries. */
  private async computeFingerprint(): Promise<string> {
    const parts: string[] = [];
    for (const dir of [...this.options.confDirs, ...this.options.invoker.binDirs]) {
      let names: string[];
      try {
        names = (await readdir(dir)).sort();
      } catch (err) {
        parts.push(`${dir}:${isErrno(err, 'ENOENT') ? 'missing' : errorMessage(err)}`);
        continue;
      }
      for (const name of names) {
        try {
          const info = await stat(path.join(dir, name));
          parts.push(`${dir}/${name}:${info.size}:${info.mtimeMs}:${info.mode}`);
        } catch {
          parts.push(`${dir}/${name}:gone`);
        }
      }
    }
    return parts.join('\n');
  }

  private async load(): Promise<ConfigSnapshot> {
    const networks: LoadedNetwork[] = [];
    const skipped: SkippedFile[] = [];
    const missingDirs: string[] = [];

    for (const dir of this.options.confDirs) {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) missingDirs.push(dir);
        else skipped.push({ file: dir, reason: `cannot read directory: ${errorMessage(err)}` });
        continue;
      }

      // Byte order, as Go's sort.Strings orders config names for other runtimes.
      const files = names
        .filter((name) => CONFIG_EXTENSIONS.includes(path.extname(name).toLowerCase()))
        .sort(compareBytes)
        .map((name) => path.join(dir, name));

      for (const file of files) {
        try {
          const list = await this.loadFile(file);
          const clash = networks.find((network) => network.list.name === list.name);
          if (clash) throw new InvalidNetworkConfig(`network name "${list.name}" is already used by ${clash.file}`);
          networks.push({ file, list });
        } catch (err) {
          if (!(err instanceof InvalidNetworkConfig)) throw err;
          skipped.push({ file, reason: err.message });
        }
      }
    }

    const defaultNetwork = this.pickDefault(networks);
    return { networks, skipped, defaultNetwork, status: this.describeStatus(networks, skipped, missingDirs, defaultNetwork) };
  }

  private async loadFile(file: string): Promise<NetworkConfList> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      // A file removed between the listing and the read is simply gone.
      if (isErrno(err, 'ENOENT')) throw new InvalidNetworkConfig('removed while being read');
      throw new InvalidNetworkConfig(`cannot read: ${errorMessage(err)}`);
    }

    const list = parseNetworkConfig(file, text);
    await this.checkBinaries(list);
    return list;
  }

  /**
   * Checks that every binary the list names is installed and that each chained plugin supports
   * the list's cniVersion, asking it with the VERSION command.
   */
  private async checkBinaries(list: NetworkConfList): Promise<void> {
    const invoker = this.options.invoker;
    for (const type of requiredBinaries(list)) {
      if (!(await invoker.find(type))) {
        throw new InvalidNetworkConfig(`plugin "${type}" not found in ${invoker.binDirs.join(', ')}`);
      }
    }

    for (const type of new Set(list.plugins.map((plugin) => plugin.type))) {
      const info = await this.versionInfo(type, list);
      if (!info.supportedVersions.includes(list.cniVersion)) {
        throw new InvalidNetworkConfig(
          `plugin "${type}" does not support cniVersion ${list.cniVersion} (it supports ${info.supportedVersions.join(', ')})`,
        );
      }
    }
  }

  /** Runs VERSION once per binary and caches the response until the binary changes. */
  private async versionInfo(type: string, list: NetworkConfList): Promise<VersionInfo> {
    const invoker = this.options.invoker;
    const binary = (await invoker.find(type)) ?? type;
    const info = await stat(binary);
    const key = `${binary}:${info.size}:${info.mtimeMs}`;
    const cached = this.versionCache.get(type);
    if (cached?.key === key) return cached.info;

    let output: unknown;
    try {
      ({ output } = await invoker.invoke({
        command: 'VERSION',
        plugin: type,
        network: list.name,
        config: { cniVersion: list.cniVersion },
        log: this.options.log,
      }));
    } catch (err) {
      throw new InvalidNetworkConfig(`plugin "${type}" failed the VERSION command: ${errorMessage(err)}`);
    }

    const versions = (output as { supportedVersions?: unknown } | undefined)?.supportedVersions;
    if (!Array.isArray(versions) || !versions.every((version) => typeof version === 'string')) {
      throw new InvalidNetworkConfig(`plugin "${type}" returned no supportedVersions list for the VERSION command`);
    }
    const result: VersionInfo = { supportedVersions: versions };
    this.versionCache.set(type, { key, info: result });
    return result;
  }

  private pickDefault(networks: LoadedNetwork[]): LoadedNetwork | undefined {
    const wanted = this.options.defaultNetwork;
    if (wanted === '') return networks[0];
    return networks.find((network) => network.list.name === wanted);
  }

  private describeStatus(
    networks: LoadedNetwork[],
    skipped: SkippedFile[],
    missingDirs: string[],
    defaultNetwork: LoadedNetwork | undefined,
  ): NetworkStatus {
    if (defaultNetwork) return { ready: true };

    const dirs = this.options.confDirs.join(', ');
    const skippedText = skipped.length > 0 ? `; skipped: ${skipped.map((entry) => `${entry.file}: ${entry.reason}`).join('; ')}` : '';

    if (this.options.defaultNetwork !== '' && networks.length > 0) {
      const names = networks.map((network) => network.list.name).join(', ');
      return {
        ready: false,
        reason: 'DefaultNetworkNotFound',
        message: `plugins.cni.default_network "${this.options.defaultNetwork}" is not among the valid networks in ${dirs} (valid: ${names})${skippedText}`,
      };
    }

    if (skipped.length > 0) {
      return { ready: false, reason: 'InvalidNetworkConfig', message: `no valid CNI network config in ${dirs}${skippedText}` };
    }

    const missing = missingDirs.length > 0 ? ` (missing: ${missingDirs.join(', ')})` : '';
    return {
      ready: false,
      reason: 'NoNetworkConfig',
      message: `no CNI network config found in ${dirs}${missing}; install a .conflist file there`,
    };
  }

  private logSnapshot(snapshot: ConfigSnapshot): void {
    const log = this.options.log;
    for (const entry of snapshot.skipped) {
      log.warn({ file: entry.file, reason: entry.reason }, 'CNI network config skipped');
    }
    if (snapshot.defaultNetwork) {
      log.info(
        {
          networks: snapshot.networks.map((network) => `${network.list.name} (${network.file})`),
          default_network: snapshot.defaultNetwork.list.name,
          file: snapshot.defaultNetwork.file,
        },
        'CNI network configs loaded',
      );
    } else {
      log.warn({ reason: snapshot.status.reason }, `CNI network not ready: ${snapshot.status.message}`);
    }
  }
}

function compareBytes(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}
