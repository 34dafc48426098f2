import path from 'node:path';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  KeyedMutex,
  NotFoundError,
  errorMessage,
  type Logger,
  type NetworkProvider,
  type NetworkProviderContext,
  type NetworkStatus,
  type PodNetworkRequest,
  type PodNetworkResult,
} from '@berth/core';
import { AttachmentCache, type AttachmentRecord } from './cache.js';
import { addChain, checkChain, delChain, unusedCapabilities, type ChainContext } from './chain.js';
import { ConfigStore, type LoadedNetwork } from './config-store.js';
import { isNamespaceFile } from './netns.js';
import type { CniOptions } from './options.js';
import { PluginInvoker } from './plugin-exec.js';
import { podIps } from './result.js';
import { buildCapabilityArgs, buildCniArgs, type CapabilityArgs } from './runtime-config.js';
import { NAME_PATTERN, type NetworkConfList } from './spec.js';

const LOOPBACK_PLUGIN = 'loopback';
const LOOPBACK_NETWORK = 'cni-loopback';
const LOOPBACK_IFNAME = 'lo';

/** One network a pod joins: its config list and the interface name inside the pod. */
interface Attachment {
  network: NetworkConfList;
  file: string;
  ifName: string;
}

/**
 * The NetworkProvider that wires pods with CNI plugins: ADD of the default network (and of the
 * loopback plugin) on set-up, DEL from the cached attachment records on tear-down.
 */
export class CniNetworkProvider implements NetworkProvider {
  readonly name = 'cni';
  private readonly lock = new KeyedMutex();

  private constructor(
    readonly options: CniOptions,
    private readonly store: ConfigStore,
    readonly invoker: PluginInvoker,
    readonly cache: AttachmentCache,
    private readonly log: Logger,
  ) {}

  /** Creates the provider, reads the network configs once and starts watching them. */
  static async create(options: CniOptions, context: NetworkProviderContext): Promise<CniNetworkProvider> {
    const invoker = new PluginInvoker(options.bin_dirs, options.plugin_timeout_seconds * 1000);
    const cache = new AttachmentCache(options.cache_dir || path.join(context.dataDir, 'cache'), context.log);
    await cache.init();

    const store = new ConfigStore({
      confDirs: options.conf_dirs,
      defaultNetwork: options.default_network,
      reloadIntervalMs: options.reload_interval_seconds * 1000,
      invoker,
      log: context.log,
    });
    await store.start();

    context.log.info(
      { conf_dirs: options.conf_dirs, bin_dirs: options.bin_dirs, cache_dir: cache.dir, default_network: options.default_network || '(first valid)' },
      'CNI network provider started',
    );
    return new CniNetworkProvider(options, store, invoker, cache, context.log);
  }

  async status(): Promise<NetworkStatus> {
    const snapshot = await this.store.reload();
    if (!snapshot.defaultNetwork) return snapshot.status;

    if (this.needsLoopback(snapshot.defaultNetwork.list) && !(await this.invoker.find(LOOPBACK_PLUGIN))) {
      return {
        ready: false,
        reason: 'LoopbackPluginNotFound',
        message: `CNI plugin "${LOOPBACK_PLUGIN}" not found in ${this.invoker.binDirs.join(', ')}; install it or set plugins.cni.loopback = false`,
      };
    }
    return { ready: true };
  }

  async setUp(request: PodNetworkRequest): Promise<PodNetworkResult> {
    const started = performance.now();
    checkSandboxId(request.sandboxId);
    if (!(await isNamespaceFile(request.netnsPath))) {
      throw new InvalidArgumentError(
        `pod sandbox ${request.sandboxId}: network namespace ${JSON.stringify(request.netnsPath)} is not a mounted network namespace`,
      );
    }
    const cniArgs = buildCniArgs(request);
    const capabilityArgs = buildCapabilityArgs(request);

    let snapshot = this.store.current();
    if (!snapshot.defaultNetwork) snapshot = await this.store.reload();
    const network = snapshot.defaultNetwork;
    if (!network) {
      throw new FailedPreconditionError(`pod sandbox ${request.sandboxId}: pod network is not ready (${snapshot.status.reason}): ${snapshot.status.message}`);
    }

    for (const capability of unusedCapabilities(network.list, capabilityArgs)) {
      request.log.warn(
        { network: network.list.name, file: network.file, capability },
        `pod asks for ${capability}, but no plugin of the network declares that capability; ignored`,
      );
    }

    return this.lock.run(request.sandboxId, async () => {
      await this.releaseStale(request);

      const attachments = this.attachmentsFor(network);
      const added: AttachmentRecord[] = [];
      try {
        for (const attachment of attachments) {
          added.push(await this.add(request, attachment, cniArgs, capabilityArgs));
        }
      } catch (err) {
        // The failed attachment already undid itself; undo the ones before it.
        await this.undo(added.reverse(), request.log);
        throw err;
      }

      const main = added[added.length - 1]!;
      const ips = podIps(main.result!, main.ifName);
      const durationMs = Math.round(performance.now() - started);
      request.log.info({ network: network.list.name, ips, duration_ms: durationMs }, 'CNI ADD of the pod finished');
      return { ips };
    });
  }

  async tearDown(request: PodNetworkRequest): Promise<void> {
    checkSandboxId(request.sandboxId);
    const started = performance.now();

    await this.lock.run(request.sandboxId, async () => {
      const records = await this.cache.list(request.sandboxId);
      if (records.length === 0) {
        await this.delWithoutRecord(request);
      } else {
        const failures: unknown[] = [];
        for (const record of records.reverse()) {
          try {
            await this.del(record, request.log);
          } catch (err) {
            failures.push(err);
          }
        }
        if (failures.length > 0) throw failures[0];
      }
    });

    request.log.info({ duration_ms: Math.round(performance.now() - started) }, 'CNI DEL of the pod finished');
  }

  async check(request: PodNetworkRequest): Promise<void> {
    checkSandboxId(request.sandboxId);

    await this.lock.run(request.sandboxId, async () => {
      const records = await this.cache.list(request.sandboxId);
      if (records.length === 0) {
        throw new NotFoundError(`pod sandbox ${request.sandboxId}: no CNI attachment is recorded in ${this.cache.dir}`);
      }

      for (const record of records) {
        if (!record.result) {
          throw new FailedPreconditionError(
            `pod sandbox ${request.sandboxId}: ADD of network "${record.network.name}" did not complete; the pod's network must be set up again`,
          );
        }
        if (!(await isNamespaceFile(record.netns))) {
          throw new FailedPreconditionError(`pod sandbox ${request.sandboxId}: network namespace ${record.netns} no longer exists`);
        }

        const checked = await checkChain(this.invoker, this.chainContext(record, record.netns, request.log), record.result);
        if (!checked) {
          request.log.debug({ network: record.network.name, cni_version: record.network.cniVersion }, 'CHECK skipped: the network disables it or its version has none');
        }
      }
    });
  }

  async close(): Promise<void> {
    await this.store.close();
    this.log.info('CNI network provider stopped');
  }

  /** The loopback attachment comes first, as `lo` must be up before anything uses the pod. */
  private attachmentsFor(network: LoadedNetwork): Attachment[] {
    const attachments: Attachment[] = [];
    if (this.needsLoopback(network.list)) {
      attachments.push({
        network: { cniVersion: network.list.cniVersion, name: LOOPBACK_NETWORK, plugins: [{ type: LOOPBACK_PLUGIN }] },
        file: '(built in)',
        ifName: LOOPBACK_IFNAME,
      });
    }
    attachments.push({ network: network.list, file: network.file, ifName: this.options.interface_name });
    return attachments;
  }

  private needsLoopback(list: NetworkConfList): boolean {
    return this.options.loopback && !list.plugins.some((plugin) => plugin.type === LOOPBACK_PLUGIN);
  }

  /**
   * Runs ADD of one attachment, recording it before the first plugin starts so that a crash
   * midway still leaves what DEL needs. When ADD fails, runs DEL of the whole list and drops the
   * record, then throws the ADD error.
   */
  private async add(request: PodNetworkRequest, attachment: Attachment, cniArgs: string, capabilityArgs: CapabilityArgs): Promise<AttachmentRecord> {
    const record: AttachmentRecord = {
      kind: 'berth-cni-attachment/v1',
      containerId: request.sandboxId,
      ifName: attachment.ifName,
      network: attachment.network,
      file: attachment.file,
      cniArgs,
      capabilityArgs,
      netns: request.netnsPath,
      createdAt: Date.now(),
    };
    await this.cache.save(record);

    const context = this.chainContext(record, record.netns, request.log);
    try {
      const { result, timings } = await addChain(this.invoker, context);
      record.result = result;
      await this.cache.save(record);
      request.log.debug(
        { network: attachment.network.name, plugins: timings.map((timing) => ({ plugin: timing.plugin, duration_ms: Math.round(timing.durationMs) })) },
        'CNI ADD finished',
      );
      return record;
    } catch (err) {
      request.log.warn({ err, network: attachment.network.name }, 'CNI ADD failed; running DEL to release what it set up');
      try {
        await delChain(this.invoker, context, undefined);
        await this.cache.remove(record.containerId, record.network.name, record.ifName);
      } catch (cleanupErr) {
        // The record stays, so that the pod's tear-down retries the DEL.
        request.log.error({ err: cleanupErr, network: attachment.network.name }, 'CNI DEL after a failed ADD failed; the record is kept for the tear-down');
      }
      throw err;
    }
  }

  /** Runs DEL of one recorded attachment and drops its record once DEL succeeded. */
  private async del(record: AttachmentRecord, log: Logger): Promise<void> {
    const netns = (await isNamespaceFile(record.netns)) ? record.netns : '';
    await delChain(this.invoker, this.chainContext(record, netns, log), record.result);
    await this.cache.remove(record.containerId, record.network.name, record.ifName);
    log.debug({ network: record.network.name, netns_present: netns !== '' }, 'CNI DEL finished');
  }

  private async undo(records: AttachmentRecord[], log: Logger): Promise<void> {
    for (const record of records) {
      try {
        await this.del(record, log);
      } catch (err) {
        log.error({ err, network: record.network.name }, 'cannot undo a CNI attachment after a later one failed; the record is kept for the tear-down');
      }
    }
  }

  /**
   * Releases attachments recorded for the sandbox by an earlier set-up, which a crash or a
   * failed DEL left behind; CNI plugins must not see two ADDs without a DEL between them.
   */
  private async releaseStale(request: PodNetworkRequest): Promise<void> {
    const stale = await this.cache.list(request.sandboxId);
    if (stale.length === 0) return;

    request.log.warn({ networks: stale.map((record) => record.network.name) }, 'releasing CNI attachments left by an earlier set-up of this sandbox');
    for (const record of stale.reverse()) await this.del(record, request.log);
  }

  /**
   * DEL for a sandbox without records: its ADD never ran here, or its record was lost. DEL of the
   * current default network releases what such an ADD would have made; plugins accept DEL for
   * containers they do not know.
   */
  private async delWithoutRecord(request: PodNetworkRequest): Promise<void> {
    const network = this.store.current().defaultNetwork;
    if (!network) {
      request.log.info('no CNI attachment is recorded and no network is configured; nothing to release');
      return;
    }

    let capabilityArgs: CapabilityArgs = {};
    try {
      capabilityArgs = buildCapabilityArgs(request);
    } catch (err) {
      request.log.warn({ err }, `DEL runs without capability arguments: ${errorMessage(err)}`);
    }
    const netns = (await isNamespaceFile(request.netnsPath)) ? request.netnsPath : '';
    const context: ChainContext = {
      network: network.list,
      containerId: request.sandboxId,
      netns,
      ifName: this.options.interface_name,
      cniArgs: safeCniArgs(request),
      capabilityArgs,
      log: request.log,
    };
    await delChain(this.invoker, context, undefined);
  }

  private chainContext(record: AttachmentRecord, netns: string, log: Logger): ChainContext {
    return {
      network: record.network,
      containerId: record.containerId,
      netns,
      ifName: record.ifName,
      cniArgs: record.cniArgs,
      capabilityArgs: record.capabilityArgs,
      log,
    };
  }
}

/** CNI_CONTAINERID must be alphanumeric with `_`, `.` and `-`; the sandbox id becomes it. */
function checkSandboxId(id: string): void {
  if (!NAME_PATTERN.test(id)) {
    throw new InvalidArgumentError(`pod sandbox id ${JSON.stringify(id)} cannot be a CNI container id (allowed: letters, digits, "_", "." and "-")`);
  }
}

function safeCniArgs(request: PodNetworkRequest): string {
  try {
    return buildCniArgs(request);
  } catch {
    return 'IgnoreUnknown=1';
  }
}
