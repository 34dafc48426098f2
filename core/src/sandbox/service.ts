import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { withIds, type Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, errorMessage } from '../errors.js';
import type { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import type { PodNetworkService } from '../network/service.js';
import type { PodNetworkRequest, PortMapping } from '../network/provider.js';
import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { NamespaceOption__Output } from '../cri/generated/runtime/v1/NamespaceOption.js';
import { CleanupStack } from '../util/cleanup.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import type { KeyedRwLock } from '../util/keyed-rw-lock.js';
import { removeCgroup } from '../cgroups/paths.js';
import { ObjectStore } from '../state/object-store.js';
import { isPinned, mountShm, pinNamespaces, pinnedPaths, releasePodMounts, shmPathOf, unmountShm, unpinNamespaces, type PinnedKind } from './namespaces.js';
import { renderHosts, renderResolvConf, validateDns, validateHostname, type DnsSettings } from './files.js';
import { checkSysctlsExist, validateSysctls } from './sysctl.js';
import { sandboxNameKey, type PodNamespaceModes, type SandboxRecord } from './record.js';

/** Sandboxes in memory and on disk, shared by the sandbox and container services. */
export class SandboxStore extends ObjectStore<SandboxRecord> {}

/** What the sandbox service needs from the container service, which depends on it in turn. */
export interface SandboxContainers {
  /** Stops every container of the sandbox, SIGKILL after `timeoutSeconds`. */
  stopAll(sandboxId: string, timeoutSeconds: number, log: Logger): Promise<void>;
  /** Removes every container of the sandbox, including its infra container. */
  removeAll(sandboxId: string, log: Logger): Promise<void>;
  /** Creates and starts the container that keeps the pod's PID namespace alive; returns its id. */
  startInfra(sandbox: SandboxRecord, log: Logger): Promise<string>;
}

/** A cgroupfs path: absolute, plain path components, no `..`. */
const CGROUP_PARENT = /^(\/[A-Za-z0-9_.:@-]+)+\/?$/;

/**
 * Pod sandboxes: their namespaces, files, /dev/shm, cgroup parent and network. Namespaces are
 * pinned by bind mounts instead of a pause process. Only a pod that shares one PID namespace
 * among its containers gets an infra container, because no process can join a PID namespace
 * once its first process has exited.
 */
@injectable()
export class SandboxService {
  private readonly locks = new KeyedMutex();
  /** Name keys reserved by sandboxes that exist or are being created. */
  private readonly names = new Map<string, string>();

  constructor(
    @inject(Tokens.Config) private readonly config: BerthConfig,
    @inject(Tokens.RuntimeHandlers) private readonly handlers: RuntimeHandlerRegistry,
    @inject(Tokens.PodNetwork) private readonly network: PodNetworkService,
    @inject(Tokens.SandboxStore) private readonly store: SandboxStore,
    @inject(Tokens.SandboxContainers) private readonly containers: SandboxContainers,
    @inject(Tokens.SandboxLocks) private readonly sandboxLocks: KeyedRwLock,
  ) {}

  /** Runs a pod sandbox and returns its id. On failure nothing of it stays behind. */
  async run(config: PodSandboxConfig__Output, runtimeHandler: string, requestLog: Logger): Promise<string> {
    const plan = this.validate(config, runtimeHandler);
    await checkSysctlsExist(plan.sysctls);
    const nameKey = sandboxNameKey(config);
    const existing = this.names.get(nameKey);
    if (existing) {
      throw new AlreadyExistsError(
        `pod sandbox name ${JSON.stringify(nameKey)} is already used by sandbox ${existing}; remove it first or raise metadata.attempt`,
      );
    }

    const id = randomBytes(32).toString('hex');
    const log = withIds(requestLog, { sandbox_id: id });
    this.names.set(nameKey, id);
    const cleanup = new CleanupStack(log);
    cleanup.push('name reservation', async () => {
      this.names.delete(nameKey);
    });

    try {
      return await this.locks.run(id, async () => {
        const record = await this.create(id, config, plan, cleanup, log);
        cleanup.release();
        log.info({ handler: record.runtimeHandler, ips: record.ips, name: config.metadata?.name }, 'pod sandbox ready');
        return id;
      });
    } catch (err) {
      await cleanup.unwind();
      throw err;
    }
  }

  /**
   * Stops every container of the pod, tears its network down and releases its namespaces and
   * /dev/shm. Idempotent: a stopped or unknown sandbox is success.
   */
  async stop(id: string, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { sandbox_id: id });
    // The exclusive hold waits for CreateContainer and StartContainer calls in the pod.
    await this.locks.run(id, () =>
      this.sandboxLocks.exclusive(id, async () => {
        const record = this.store.get(id);
        if (!record) {
          log.info('pod sandbox not found; nothing to stop');
          return;
        }
        await this.stopLocked(record, log);
      }),
    );
  }

  /** Removes the pod, its containers and everything it made. Idempotent. */
  async remove(id: string, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { sandbox_id: id });
    await this.locks.run(id, () =>
      this.sandboxLocks.exclusive(id, async () => {
        const record = this.store.get(id);
        if (!record) {
          log.info('pod sandbox not found; nothing to remove');
          return;
        }

        await this.stopLocked(record, log);
        await this.containers.removeAll(id, log);
        // The stop saved the record without network and namespaces, so they are not released twice.
        await this.release(this.store.get(id) ?? record, log);
        await this.store.remove(id);
        this.names.delete(sandboxNameKey(record.config));
        log.info('pod sandbox removed');
      }),
    );
  }

  /** Returns the sandbox record; throws NotFoundError naming the id. */
  get(id: string): SandboxRecord {
    const record = this.store.get(id);
    if (!record || record.state === 'creating') throw new NotFoundError(`pod sandbox ${id} not found`);
    return record;
  }

  list(): SandboxRecord[] {
    return this.store.list().filter((record) => record.state !== 'creating');
  }

  /**
   * Loads persisted sandboxes at start-up. A record left in `creating` by a crash is released
   * and deleted; a ready sandbox whose namespaces are gone (after a reboot) or whose runtime
   * handler is no longer configured becomes not ready. A sandbox that fails to recover is
   * logged and stays listed, so that one bad record does not stop the daemon.
   */
  async recover(log: Logger): Promise<void> {
    const records = await this.store.load(log);
    for (const record of records) {
      const sandboxLog = withIds(log, { sandbox_id: record.id });
      try {
        await this.recoverOne(record, sandboxLog);
      } catch (err) {
        sandboxLog.error({ err: errorMessage(err), handler: record.runtimeHandler, state: record.state }, 'cannot recover the pod sandbox; it stays listed');
      }
    }
    log.info({ sandboxes: this.store.list().length }, 'pod sandboxes recovered');
  }

  private async recoverOne(record: SandboxRecord, log: Logger): Promise<void> {
    if (record.state === 'creating') {
      log.warn('pod sandbox was being created when the daemon stopped; releasing it');
      try {
        await this.containers.removeAll(record.id, log);
        await this.release(record, log);
        await this.store.remove(record.id);
      } catch (err) {
        // Listed as not ready, RemovePodSandbox can retry the release.
        await this.store.save({ ...record, state: 'notready' });
        this.names.set(sandboxNameKey(record.config), record.id);
        throw err;
      }
      return;
    }

    this.names.set(sandboxNameKey(record.config), record.id);
    if (record.state !== 'ready') return;
    if (!this.handlers.names().includes(record.runtimeHandler)) {
      log.error(
        { handler: record.runtimeHandler, configured: this.handlers.names() },
        'runtime handler of the pod sandbox is no longer configured; marking it not ready',
      );
      await this.store.save({ ...record, state: 'notready' });
    } else if (!(await this.namespacesIntact(record))) {
      log.warn('pinned namespaces of a ready pod sandbox are gone (host reboot?); marking it not ready');
      await this.store.save({ ...record, state: 'notready' });
    }
  }

  private async create(
    id: string,
    config: PodSandboxConfig__Output,
    plan: SandboxPlan,
    cleanup: CleanupStack,
    log: Logger,
  ): Promise<SandboxRecord> {
    const dir = path.join(this.config.runroot, 'sandboxes', id);
    const ownsCgroupParent = plan.cgroupParent === '';
    const record: SandboxRecord = {
      id,
      state: 'creating',
      createdAtNs: String(BigInt(Date.now()) * 1_000_000n),
      runtimeHandler: plan.handler,
      config,
      hostname: plan.hostname,
      namespaces: plan.namespaces,
      sysctls: plan.sysctls,
      dir,
      pinned: pinnedPaths(path.join(dir, 'ns'), plan.pinned),
      shmPath: plan.namespaces.ipc === 'POD' ? shmPathOf(dir) : undefined,
      cgroupParent: ownsCgroupParent ? `${this.config.runtime.cgroup_parent}/${id}` : plan.cgroupParent,
      ownsCgroupParent,
      ips: [],
      networkSetUp: plan.namespaces.network === 'POD',
    };

    // The intent record comes first: a crash from here on leaves a record that recovery undoes.
    // It names every mount and the network this call may set up, so no second write is needed
    // before the network setup. Releasing a mount that was never made is success, and so is a
    // network teardown, which providers make idempotent.
    await this.store.save(record);
    cleanup.push('sandbox record', () => this.store.remove(id));
    await mkdir(dir, { recursive: true, mode: 0o711 });
    cleanup.push('sandbox directory', () => rm(dir, { recursive: true, force: true }));
    if (config.log_directory) await mkdir(config.log_directory, { recursive: true, mode: 0o755 });

    await pinNamespaces(path.join(dir, 'ns'), plan.pinned);
    cleanup.push('pinned namespaces', () => unpinNamespaces(Object.values(record.pinned)));
    if (record.shmPath) {
      await mountShm(dir, this.config.runtime.shm_size);
      cleanup.push('/dev/shm mount', () => unmountShm(record.shmPath!));
    }
    if (record.ownsCgroupParent) cleanup.push('cgroup parent', () => removeCgroup(record.cgroupParent));

    await writeFile(path.join(dir, 'hostname'), `${plan.hostname}\n`, { mode: 0o644 });
    await writeFile(path.join(dir, 'resolv.conf'), await renderResolvConf(plan.dns, log), { mode: 0o644 });

    if (plan.namespaces.network === 'POD') {
      const started = process.hrtime.bigint();
      const request = this.networkRequest(record, log);
      cleanup.push('pod network', () => this.network.tearDown(request));
      record.ips = (await this.network.setUp(request)).ips;
      record.networkSetupMs = Number(process.hrtime.bigint() - started) / 1e6;
      log.info({ network_setup_ms: record.networkSetupMs, ips: record.ips }, 'pod network set up');
    }
    // A host-network pod sees the node's names, as its processes share the node's network.
    let hosts = renderHosts(plan.hostname, record.ips);
    if (plan.namespaces.network === 'NODE') hosts = await readFile('/etc/hosts', 'utf8');
    await writeFile(path.join(dir, 'hosts'), hosts, { mode: 0o644 });

    if (plan.namespaces.pid === 'POD') {
      cleanup.push('infra container', () => this.containers.removeAll(id, log));
      record.infraContainerId = await this.containers.startInfra(record, log);
    }

    record.state = 'ready';
    await this.store.save(record);
    return record;
  }

  private async stopLocked(record: SandboxRecord, log: Logger): Promise<void> {
    await this.containers.stopAll(record.id, this.config.runtime.stop_timeout_seconds, log);
    if (record.state === 'notready' && !record.networkSetUp && Object.keys(record.pinned).length === 0) return;

    await this.releaseNetworkAndNamespaces(record, log);
    // The addresses went back to the pool with the teardown, so PodSandboxStatus stops reporting them.
    await this.store.save({ ...record, state: 'notready', networkSetUp: false, ips: [], pinned: {}, shmPath: undefined });
    log.info('pod sandbox stopped');
  }

  /** Tears down the network, then unpins namespaces and /dev/shm. Safe to repeat. */
  private async releaseNetworkAndNamespaces(record: SandboxRecord, log: Logger): Promise<void> {
    if (record.networkSetUp) {
      try {
        await this.network.tearDown(this.networkRequest(record, log));
      } catch (err) {
        // The namespace goes away below; the provider must release addresses on a later call.
        log.error({ err: errorMessage(err) }, 'pod network teardown failed');
        throw err;
      }
    }
    await releasePodMounts(Object.values(record.pinned), record.shmPath);
  }

  /** Releases everything a sandbox record names: network, mounts, directory and owned cgroup. */
  private async release(record: SandboxRecord, log: Logger): Promise<void> {
    await this.releaseNetworkAndNamespaces(record, log);
    await rm(record.dir, { recursive: true, force: true });
    if (record.ownsCgroupParent) await removeCgroup(record.cgroupParent);
  }

  private async namespacesIntact(record: SandboxRecord): Promise<boolean> {
    for (const file of Object.values(record.pinned)) {
      if (!(await isPinned(file))) return false;
    }
    return true;
  }

  private networkRequest(record: SandboxRecord, log: Logger): PodNetworkRequest {
    const config = record.config;
    const dns = config.dns_config;
    return {
      sandboxId: record.id,
      podName: config.metadata?.name ?? '',
      podNamespace: config.metadata?.namespace ?? '',
      podUid: config.metadata?.uid ?? '',
      netnsPath: record.pinned.net ?? '',
      portMappings: (config.port_mappings ?? []).map(
        (mapping): PortMapping => ({
          protocol: (String(mapping.protocol).toLowerCase() as PortMapping['protocol']) ?? 'tcp',
          containerPort: mapping.container_port,
          hostPort: mapping.host_port,
          hostIp: mapping.host_ip,
        }),
      ),
      annotations: config.annotations ?? {},
      dns: dns ? { servers: dns.servers, searches: dns.searches, options: dns.options } : undefined,
      log,
    };
  }

  /** Checks the request and works out what the sandbox needs; throws InvalidArgumentError. */
  private validate(config: PodSandboxConfig__Output, runtimeHandler: string): SandboxPlan {
    const metadata = config.metadata;
    for (const field of ['name', 'namespace', 'uid'] as const) {
      if (!metadata || metadata[field] === '') {
        throw new InvalidArgumentError(`config.metadata.${field}: must not be empty`);
      }
    }

    const handler = this.handlers.get(runtimeHandler).name;
    const namespaces = podNamespaceModes(config.linux?.security_context?.namespace_options ?? null);

    // A host-network pod shares the node's UTS namespace, so its host name is the node's.
    let hostname = config.hostname !== '' ? config.hostname : metadata!.name.slice(0, 63);
    if (namespaces.network === 'NODE') hostname = os.hostname();
    validateHostname(hostname);

    const dns: DnsSettings = {
      servers: config.dns_config?.servers ?? [],
      searches: config.dns_config?.searches ?? [],
      options: config.dns_config?.options ?? [],
    };
    validateDns(dns);

    const sysctls = validateSysctls(config.linux?.sysctls ?? {}, {
      hostNetwork: namespaces.network === 'NODE',
      hostIpc: namespaces.ipc === 'NODE',
    });

    if (config.log_directory !== '' && !path.isAbsolute(config.log_directory)) {
      throw new InvalidArgumentError(`config.log_directory: ${JSON.stringify(config.log_directory)} is not an absolute path`);
    }

    const cgroupParent = config.linux?.cgroup_parent ?? '';
    if (cgroupParent !== '') {
      if (cgroupParent.endsWith('.slice')) {
        throw new InvalidArgumentError(
          `config.linux.cgroup_parent: ${JSON.stringify(cgroupParent)} is a systemd slice, but berth uses the cgroupfs driver (RuntimeConfig reports CGROUPFS); pass a path such as /kubepods/pod<uid>`,
        );
      }
      if (!CGROUP_PARENT.test(cgroupParent) || cgroupParent.split('/').includes('..')) {
        throw new InvalidArgumentError(
          `config.linux.cgroup_parent: ${JSON.stringify(cgroupParent)} is not a cgroupfs path (absolute, components of letters, digits and _ . : @ -)`,
        );
      }
    }

    for (const [index, mapping] of (config.port_mappings ?? []).entries()) {
      for (const field of ['container_port', 'host_port'] as const) {
        if (mapping[field] < 0 || mapping[field] > 65535) {
          throw new InvalidArgumentError(`config.port_mappings[${index}].${field}: ${mapping[field]} is not a port number (0 to 65535)`);
        }
      }
    }

    const pinned: PinnedKind[] = [];
    if (namespaces.network === 'POD') pinned.push('net', 'uts');
    if (namespaces.ipc === 'POD') pinned.push('ipc');

    return { handler, namespaces, hostname, dns, sysctls, cgroupParent: cgroupParent.replace(/\/$/, ''), pinned };
  }
}

interface SandboxPlan {
  handler: string;
  namespaces: PodNamespaceModes;
  hostname: string;
  dns: DnsSettings;
  sysctls: Record<string, string>;
  cgroupParent: string;
  pinned: PinnedKind[];
}

/** Reads the pod-level namespace options; modes a pod cannot use are InvalidArgument. */
export function podNamespaceModes(options: NamespaceOption__Output | null): PodNamespaceModes {
  const network = options?.network ?? 'POD';
  const pid = options?.pid ?? 'CONTAINER';
  const ipc = options?.ipc ?? 'POD';
  const where = 'config.linux.security_context.namespace_options';

  if (network !== 'POD' && network !== 'NODE') {
    throw new InvalidArgumentError(`${where}.network: ${network} is not allowed for a pod (allowed: POD, NODE)`);
  }
  if (ipc !== 'POD' && ipc !== 'NODE') {
    throw new InvalidArgumentError(`${where}.ipc: ${ipc} is not allowed for a pod (allowed: POD, NODE)`);
  }
  if (pid === 'TARGET') {
    throw new InvalidArgumentError(`${where}.pid: TARGET is not allowed for a pod (allowed: POD, CONTAINER, NODE)`);
  }
  if (options?.userns_options && options.userns_options.mode !== 'NODE') {
    throw new InvalidArgumentError(`${where}.userns_options: user namespaces are not supported by berth (allowed mode: NODE)`);
  }
  return { network, pid, ipc };
}
