import { randomBytes } from 'node:crypto';
import { access, lstat, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { withIds, type Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  errorMessage,
  isErrno,
} from '../errors.js';
import type { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import type { ImageRecord, ImageStore } from '../image/store.js';
import type { SeccompProfileProvider, SecurityProfileRequest } from '../seccomp/provider.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';
import type { SecurityProfile__Output } from '../cri/generated/runtime/v1/SecurityProfile.js';
import { detectCgroupLayout } from '../cgroups/layout.js';
import { removeCgroup } from '../cgroups/paths.js';
import { ObjectStore } from '../state/object-store.js';
import { CleanupStack } from '../util/cleanup.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import type { KeyedRwLock } from '../util/keyed-rw-lock.js';
import { pathExists } from '../util/fs.js';
import type { SandboxContainers, SandboxStore } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import type { OciSeccomp } from '../runtime/oci-spec.js';
import type { ContainerRecord } from './record.js';
import { buildContainerSpec, toOciResources, type PidNamespace } from './spec.js';
import { hostDevices, resolveDevices, resolveMounts } from './host-resources.js';
import { resolveUser } from './user.js';
import { OomScoreAdjLimiter } from './oom-score.js';
import { SIGKILL, SIGTERM, parseSignal, storedStopSignal } from './signals.js';

/** Containers in memory and on disk. */
export class ContainerStore extends ObjectStore<ContainerRecord> {}

/** Filter of ListContainers; every set field must match. */
export interface ContainerFilter {
  id?: string;
  state?: 'created' | 'running' | 'exited';
  sandboxId?: string;
  labels?: Record<string, string>;
}

/** Maximum time a stop waits for a SIGKILLed container to be reported gone before it fails. */
const KILL_WAIT_MS = 30_000;

/**
 * Containers of pod sandboxes: creation from an image and the CRI config, start, stop,
 * removal, status, exec and resource updates, each carried out by the pod's runtime handler.
 */
@injectable()
export class ContainerService implements SandboxContainers {
  private readonly locks = new KeyedMutex();
  /** `<sandbox id>_<name>_<attempt>` of every container, which the CRI requires to be unique. */
  private readonly names = new Map<string, string>();
  private readonly oomScore: OomScoreAdjLimiter;

  constructor(
    @inject(Tokens.Config) private readonly config: BerthConfig,
    @inject(Tokens.RuntimeHandlers) private readonly handlers: RuntimeHandlerRegistry,
    @inject(Tokens.SandboxStore) private readonly sandboxes: SandboxStore,
    @inject(Tokens.ContainerStore) private readonly store: ContainerStore,
    @inject(Tokens.ImageStore) private readonly images: ImageStore,
    @inject(Tokens.SeccompProfileProvider) private readonly seccomp: SeccompProfileProvider,
    @inject(Tokens.SandboxLocks) private readonly sandboxLocks: KeyedRwLock,
    @inject(Tokens.Logger) log: Logger,
  ) {
    this.oomScore = new OomScoreAdjLimiter(config.runtime.restrict_oom_score_adj, log);
  }

  /**
   * Creates a container in a ready sandbox and returns its id; on failure nothing stays behind.
   * It takes the sandbox lock shared, so a StopPodSandbox or RemovePodSandbox waits for it and
   * stops or removes the new container, or runs first and makes it fail.
   */
  async create(sandboxId: string, config: ContainerConfig__Output, requestLog: Logger): Promise<string> {
    this.requireReadySandbox(sandboxId);
    if (!config.metadata || config.metadata.name === '') throw new InvalidArgumentError('config.metadata.name: must not be empty');
    if (!config.image || config.image.image === '') throw new InvalidArgumentError('config.image.image: must not be empty');

    return this.sandboxLocks.shared(sandboxId, async () => {
      // The sandbox may have been stopped or removed while this call waited for the lock.
      const sandbox = this.requireReadySandbox(sandboxId);
      const image = await this.images.get(config.image!.image);
      if (!image) {
        throw new NotFoundError(`image ${JSON.stringify(config.image!.image)} not found in the image store; pull it first`);
      }
      return this.createFromImage(sandbox, config, image, false, requestLog);
    });
  }

  /** Starts a created container; an application container needs its sandbox to be ready. */
  async start(id: string, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { container_id: id });
    const { sandboxId, infra } = this.require(id);
    // RunPodSandbox starts the infra container before the sandbox is ready, and its own sandbox
    // lock keeps StopPodSandbox and RemovePodSandbox waiting meanwhile.
    if (infra) return this.startLocked(id, log);

    await this.sandboxLocks.shared(sandboxId, async () => {
      this.requireReadySandbox(sandboxId);
      await this.startLocked(id, log);
    });
  }

  private async startLocked(id: string, log: Logger): Promise<void> {
    await this.locks.run(id, async () => {
      const record = await this.refresh(this.require(id), log);
      if (record.state !== 'created') {
        throw new FailedPreconditionError(`container ${id} is ${record.state}; only a created container can be started`);
      }

      const driver = this.handlers.get(record.runtimeHandler).driver;
      try {
        await driver.start(id, log);
      } catch (err) {
        // A start that failed (say, the command does not exist) leaves a dead container.
        const message = errorMessage(err);
        await this.store.save({
          ...record,
          state: 'exited',
          exitCode: 128,
          reason: 'StartError',
          message,
          finishedAtNs: nowNs(),
        });
        throw new FailedPreconditionError(`container ${id} failed to start: ${message}`, { cause: err });
      }
      await this.store.save({ ...record, state: 'running', startedAtNs: nowNs() });
      log.info('container started');
    });
  }

  /** Returns the sandbox if it is ready; throws NotFoundError or FailedPreconditionError naming it. */
  private requireReadySandbox(sandboxId: string): SandboxRecord {
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox || sandbox.state === 'creating') throw new NotFoundError(`pod sandbox ${sandboxId} not found`);
    if (sandbox.state !== 'ready') {
      throw new FailedPreconditionError(`pod sandbox ${sandboxId} is ${sandbox.state}, not ready (it was stopped); run a new sandbox for new containers`);
    }
    return sandbox;
  }

  /**
   * Stops a container: its stop signal, then SIGKILL after `timeoutSeconds`; 0 kills at once.
   * Idempotent on a stopped container.
   */
  async stop(id: string, timeoutSeconds: number, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { container_id: id });
    await this.locks.run(id, () => this.stopLocked(this.require(id), timeoutSeconds, log));
  }

  /** Removes a container, stopping it first; idempotent, an unknown id is success. */
  async remove(id: string, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { container_id: id });
    await this.locks.run(id, async () => {
      const record = this.store.get(id);
      if (!record) {
        log.info('container not found; nothing to remove');
        return;
      }
      await this.removeLocked(record, log);
    });
  }

  /** Returns the container's record with its state brought up to date. */
  async status(id: string, log: Logger): Promise<ContainerRecord> {
    return this.refresh(this.require(id), withIds(log, { container_id: id }));
  }

  /** Lists containers matching `filter`, infra containers excluded. */
  async list(filter: ContainerFilter, log: Logger): Promise<ContainerRecord[]> {
    const result: ContainerRecord[] = [];
    for (const candidate of this.store.list()) {
      if (candidate.state === 'creating' || candidate.infra) continue;
      if (filter.id && !candidate.id.startsWith(filter.id)) continue;
      if (filter.sandboxId && !candidate.sandboxId.startsWith(filter.sandboxId)) continue;
      if (filter.labels && !matchesLabels(candidate.config.labels, filter.labels)) continue;

      const record = await this.refreshListed(candidate, withIds(log, { container_id: candidate.id }));
      if (!record) continue;
      if (filter.state && record.state !== filter.state) continue;
      result.push(record);
    }
    return result;
  }

  /**
   * Refreshes a container for a listing. Returns undefined when it was removed meanwhile. A
   * runtime that cannot report the state is logged and the last known state is returned, so
   * that one container does not fail the whole listing.
   */
  private async refreshListed(candidate: ContainerRecord, log: Logger): Promise<ContainerRecord | undefined> {
    try {
      return await this.refresh(candidate, log);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      log.error({ err: errorMessage(err), handler: candidate.runtimeHandler }, 'cannot read the container state from the runtime; listing its last known state');
      return candidate;
    }
  }

  /**
   * Runs a command in a running container. A command that outlives `timeoutSeconds` is killed
   * and the call fails with DeadlineExceeded, which the kubelet reads as a probe timeout.
   */
  async execSync(id: string, cmd: string[], timeoutSeconds: number, requestLog: Logger): Promise<{ stdout: Buffer; stderr: Buffer; exitCode: number }> {
    const log = withIds(requestLog, { container_id: id });
    if (cmd.length === 0) throw new InvalidArgumentError('cmd: must name a command to run');
    if (timeoutSeconds < 0) throw new InvalidArgumentError(`timeout: ${timeoutSeconds} must not be negative`);

    const record = await this.refresh(this.require(id), log);
    if (record.state !== 'running') throw new FailedPreconditionError(`container ${id} is ${record.state}, not running; cannot exec in it`);

    const driver = this.handlers.get(record.runtimeHandler).driver;
    const result = await driver.execSync(id, {
      cmd,
      timeoutMs: timeoutSeconds * 1000,
      maxOutputBytes: this.config.runtime.exec_sync_max_output_bytes,
      log,
    });
    if (result.timedOut) {
      // Arguments can carry secrets such as tokens and the message ends up in kubelet events, so
      // only argv[0] is named.
      throw new DeadlineExceededError(
        `command ${JSON.stringify(cmd[0])} with ${cmd.length - 1} argument${cmd.length === 2 ? '' : 's'} in container ${id} timed out after ${timeoutSeconds} s and was killed`,
      );
    }
    if (result.truncated) {
      log.warn({ max_bytes: this.config.runtime.exec_sync_max_output_bytes }, 'exec output exceeded runtime.exec_sync_max_output_bytes and was cut');
    }
    return { stdout: result.stdout, stderr: result.stderr, exitCode: result.exitCode };
  }

  /** Applies new resources to a created or running container and records them. */
  async updateResources(id: string, resources: LinuxContainerResources__Output | null, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { container_id: id });
    await this.locks.run(id, async () => {
      const record = await this.refresh(this.require(id), log);
      if (record.state === 'exited') throw new FailedPreconditionError(`container ${id} has exited; its resources cannot change`);
      if (!resources) return;

      const oci = toOciResources(resources, { swapAccounting: await swapAccounting(), pidsLimit: this.config.runtime.pids_limit });
      await this.handlers.get(record.runtimeHandler).driver.updateResources(id, oci, log);
      await this.store.save({ ...record, resources });
      log.info('container resources updated');
    });
  }

  /** Makes the container's monitor reopen its log file, after the kubelet rotated it. */
  async reopenLog(id: string, requestLog: Logger): Promise<void> {
    const log = withIds(requestLog, { container_id: id });
    const record = await this.refresh(this.require(id), log);
    if (record.state !== 'running') throw new FailedPreconditionError(`container ${id} is ${record.state}, not running; its log cannot be reopened`);
    await this.handlers.get(record.runtimeHandler).driver.reopenLog(id, log);
  }

  /** Returns the record or throws NotFoundError naming the id. */
  require(id: string): ContainerRecord {
    const record = this.store.get(id);
    if (!record || record.state === 'creating') throw new NotFoundError(`container ${id} not found`);
    return record;
  }

  async stopAll(sandboxId: string, timeoutSeconds: number, log: Logger): Promise<void> {
    const members = this.store.list().filter((record) => record.sandboxId === sandboxId && record.state !== 'creating');
    // A RemoveContainer may have run between the listing and taking the lock.
    const stop = (record: ContainerRecord): Promise<void> =>
      this.locks.run(record.id, async () => {
        const current = this.store.get(record.id);
        if (current) await this.stopLocked(current, timeoutSeconds, withIds(log, { container_id: record.id }));
      });

    // Application containers together, so that the grace periods overlap; the infra container,
    // whose PID namespace they may share, goes last.
    await settleAll(members.filter((record) => !record.infra).map(stop));
    await settleAll(members.filter((record) => record.infra).map(stop));
  }

  async removeAll(sandboxId: string, log: Logger): Promise<void> {
    const members = this.store.list().filter((record) => record.sandboxId === sandboxId);
    const remove = (record: ContainerRecord): Promise<void> =>
      this.locks.run(record.id, async () => {
        const current = this.store.get(record.id);
        if (current) await this.removeLocked(current, withIds(log, { container_id: record.id }));
      });

    await settleAll(members.filter((record) => !record.infra).map(remove));
    await settleAll(members.filter((record) => record.infra).map(remove));
  }

  async startInfra(sandbox: SandboxRecord, log: Logger): Promise<string> {
    const reference = this.config.runtime.pause_image;
    const image = (await this.images.get(reference)) ?? (await this.images.pull(reference, { log }));
    const config = infraConfig(reference);
    const id = await this.createFromImage(sandbox, config, image, true, log);
    await this.start(id, log);
    return id;
  }

  /**
   * Loads persisted containers at start-up. A container left in `creating` is deleted with
   * everything it names. The others get their state from the runtime, and that state includes
   * exits that conmon recorded while the daemon was down. A container that fails to recover is
   * logged and stays listed, so that one bad record does not stop the daemon.
   */
  async recover(log: Logger): Promise<void> {
    const records = await this.store.load(log);
    for (const record of records) {
      const containerLog = withIds(log, { container_id: record.id, sandbox_id: record.sandboxId });
      try {
        await this.recoverOne(record, containerLog);
      } catch (err) {
        containerLog.error({ err: errorMessage(err), handler: record.runtimeHandler, state: record.state }, 'cannot recover the container; it stays listed');
      }
    }
    log.info({ containers: this.store.list().length }, 'containers recovered');
  }

  private async recoverOne(record: ContainerRecord, log: Logger): Promise<void> {
    if (record.state === 'creating') {
      log.warn('container was being created when the daemon stopped; removing it');
      try {
        await this.removeLocked(record, log);
      } catch (err) {
        // Listed as exited, RemoveContainer or RemovePodSandbox can retry the removal.
        const message = `the daemon stopped while creating the container, and removing it at start-up failed: ${errorMessage(err)}`;
        await this.store.save({ ...record, state: 'exited', exitCode: 255, finishedAtNs: nowNs(), reason: 'Unknown', message });
        this.names.set(nameKey(record.sandboxId, record.config), record.id);
        throw err;
      }
      return;
    }

    this.names.set(nameKey(record.sandboxId, record.config), record.id);
    if (!this.handlers.names().includes(record.runtimeHandler) && (record.state === 'created' || record.state === 'running')) {
      log.error(
        { handler: record.runtimeHandler, configured: this.handlers.names() },
        `runtime handler of the container is no longer configured; reporting it exited with reason Unknown`,
      );
      return;
    }
    try {
      await this.refresh(record, log);
    } catch (err) {
      log.error({ err: errorMessage(err), handler: record.runtimeHandler }, 'cannot read the state of a recovered container; it keeps its last known state');
    }
  }

  private async createFromImage(
    sandbox: SandboxRecord,
    config: ContainerConfig__Output,
    image: ImageRecord,
    infra: boolean,
    requestLog: Logger,
  ): Promise<string> {
    const key = nameKey(sandbox.id, config);
    const holder = this.names.get(key);
    if (holder) {
      throw new AlreadyExistsError(
        `container name ${JSON.stringify(config.metadata?.name)} (attempt ${config.metadata?.attempt ?? 0}) is already used by container ${holder} in pod sandbox ${sandbox.id}`,
      );
    }

    const id = randomBytes(32).toString('hex');
    const log = withIds(requestLog, { container_id: id, sandbox_id: sandbox.id });
    const cleanup = new CleanupStack(log);
    this.names.set(key, id);
    cleanup.push('name reservation', async () => {
      this.names.delete(key);
    });

    try {
      await this.locks.run(id, () => this.createLocked(id, sandbox, config, image, infra, cleanup, log));
      cleanup.release();
      log.info({ image: image.id, name: config.metadata?.name }, 'container created');
      return id;
    } catch (err) {
      await cleanup.unwind();
      throw err;
    }
  }

  private async createLocked(
    id: string,
    sandbox: SandboxRecord,
    config: ContainerConfig__Output,
    image: ImageRecord,
    infra: boolean,
    cleanup: CleanupStack,
    log: Logger,
  ): Promise<void> {
    const handler = this.handlers.get(sandbox.runtimeHandler);
    const bundlePath = path.join(this.config.runroot, 'containers', id);
    const logPath = containerLogPath(sandbox, config);
    const stopSignal = stopSignalOf(config, image, log);

    const record: ContainerRecord = {
      id,
      sandboxId: sandbox.id,
      state: 'creating',
      createdAtNs: nowNs(),
      config,
      imageId: image.id,
      imageName: config.image?.user_specified_image || config.image?.image || image.repoTags[0] || image.id,
      imageRef: image.repoDigests[0] ?? image.id,
      runtimeHandler: handler.name,
      bundlePath,
      logPath,
      cgroupsPath: `${sandbox.cgroupParent}/berth-${id}`,
      resources: config.linux?.resources ?? null,
      user: { uid: 0, gid: 0, additionalGids: [] },
      stopSignal,
      infra: infra || undefined,
    };

    // The intent record comes first: a crash from here on leaves a record that recovery undoes.
    await this.store.save(record);
    cleanup.push('container record', () => this.store.remove(id));
    await mkdir(bundlePath, { recursive: true, mode: 0o700 });
    cleanup.push('bundle directory', () => rm(bundlePath, { recursive: true, force: true }));

    const rootfs = await this.images.createRootfs(id, image.id, log);
    cleanup.push('rootfs', () => this.images.removeRootfs(id, log));

    const security = config.linux?.security_context ?? null;
    const user = await resolveUser(rootfs.path, {
      imageUser: image.config.config?.User ?? '',
      runAsUser: security?.run_as_user ? Number(security.run_as_user.value) : undefined,
      runAsUsername: security?.run_as_username || undefined,
      runAsGroup: security?.run_as_group ? Number(security.run_as_group.value) : undefined,
      supplementalGroups: (security?.supplemental_groups ?? []).map(Number),
    });
    record.user = { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids };

    const { mounts, rootfsPropagation } = await resolveMounts(config.mounts);
    const privileged = security?.privileged ?? false;
    const devices = [...(privileged ? await hostDevices() : []), ...(await resolveDevices(config.devices))];
    const seccomp = await this.resolveSeccomp(security?.seccomp ?? null, security?.seccomp_profile_path ?? '', privileged, log);
    const pidNamespace = await this.pidNamespace(sandbox, config, infra);
    await createImageVolumes(rootfs.path, image, mounts.map((mount) => mount.destination), log);

    const spec = buildContainerSpec({
      id,
      config,
      sandbox,
      image: image.config.config,
      rootfsPath: rootfs.path,
      user,
      mounts,
      rootfsPropagation,
      devices,
      seccomp,
      pidNamespace,
      cgroupsPath: record.cgroupsPath,
      defaultCapabilities: this.config.runtime.default_capabilities,
      oomScoreAdj: await this.oomScore.clamp(config.linux?.resources?.oom_score_adj),
      swapAccounting: await swapAccounting(),
      pidsLimit: this.config.runtime.pids_limit,
    });
    await writeFile(path.join(bundlePath, 'config.json'), JSON.stringify(spec), { mode: 0o600 });
    if (logPath) {
      await mkdir(path.dirname(logPath), { recursive: true, mode: 0o755 });
      // The monitor creates the log file; a failed create must not leave an empty one behind.
      if (!(await pathExists(logPath))) cleanup.push('container log file', () => rm(logPath, { force: true }));
    }

    await handler.driver.create({
      id,
      sandboxId: sandbox.id,
      bundlePath,
      logPath,
      stdin: config.stdin,
      stdinOnce: config.stdin_once,
      tty: config.tty,
      log,
    });
    cleanup.push('runtime container', () => handler.driver.delete(id, log));

    record.state = 'created';
    await this.store.save(record);
  }

  private async stopLocked(current: ContainerRecord, timeoutSeconds: number, log: Logger): Promise<void> {
    const record = await this.refresh(current, log);
    if (record.state === 'exited' || record.state === 'creating') return;

    const driver = this.handlers.get(record.runtimeHandler).driver;
    if (timeoutSeconds > 0 && record.state === 'running') {
      const signal = recordStopSignal(record, log);
      let signalled = false;
      try {
        await driver.kill(record.id, signal, log);
        signalled = true;
      } catch (err) {
        // A stop must end the container, so a failed stop signal leads straight to SIGKILL.
        log.warn({ err, signal }, 'failed to send the stop signal to the container; killing it');
      }
      if (signalled) {
        if (await this.waitExited(record.id, timeoutSeconds * 1000, log)) {
          log.info({ signal }, 'container stopped');
          await this.killLeftovers(record.id, log);
          return;
        }
        log.info({ timeout_s: timeoutSeconds, signal }, 'container ignored its stop signal; killing it');
      }
    }

    await driver.kill(record.id, SIGKILL, log);
    if (!(await this.waitExited(record.id, KILL_WAIT_MS, log))) {
      throw new InternalError(`container ${record.id} still runs ${KILL_WAIT_MS / 1000} s after SIGKILL`);
    }
    log.info('container killed');
  }

  /**
   * Kills what is left in the cgroup of a container whose init has exited. In a PID namespace
   * shared with the pod, the node or another container, processes the init forked outlive it. A
   * container with a PID namespace of its own is skipped, because the kernel kills the rest of
   * that namespace when its init exits. The container has stopped either way, so a failure is
   * logged and not raised.
   */
  private async killLeftovers(id: string, log: Logger): Promise<void> {
    const record = this.store.get(id);
    if (!record || this.ownsPidNamespace(record)) return;

    try {
      await this.handlers.get(record.runtimeHandler).driver.kill(id, SIGKILL, log);
    } catch (err) {
      log.warn({ err }, 'failed to kill processes left in the stopped container');
    }
  }

  /** Tells whether the container's init is PID 1 of a namespace no other container shares. */
  private ownsPidNamespace(record: ContainerRecord): boolean {
    if (record.infra) return true;
    const sandbox = this.sandboxes.get(record.sandboxId);
    if (!sandbox) return false;
    const mode = record.config.linux?.security_context?.namespace_options?.pid ?? sandbox.namespaces.pid;
    return mode === 'CONTAINER';
  }

  private async removeLocked(record: ContainerRecord, log: Logger): Promise<void> {
    const handler = this.handlers.list().find((candidate) => candidate.name === record.runtimeHandler);
    if (record.state === 'running' || record.state === 'created') await this.stopLocked(record, 0, log);

    // The runtime's delete and the rootfs removal do not depend on each other once the container
    // has stopped, so they run together. The bundle is deleted once the runtime is done with it.
    await settleAll([
      (async () => {
        if (handler) await handler.driver.delete(record.id, log);
        else await this.removeWithoutHandler(record, log);
        await rm(record.bundlePath, { recursive: true, force: true });
      })(),
      this.images.removeRootfs(record.id, log),
    ]);
    await this.store.remove(record.id);
    if (this.names.get(nameKey(record.sandboxId, record.config)) === record.id) this.names.delete(nameKey(record.sandboxId, record.config));
    log.info('container removed');
  }

  /**
   * Removes what can be removed of a container whose runtime handler is no longer configured:
   * its cgroup, if no process is left in it. The runtime's own state (its state directory and
   * any monitor process) stays, and the log names where it is.
   */
  private async removeWithoutHandler(record: ContainerRecord, log: Logger): Promise<void> {
    const runtimeStateDir = path.join(this.config.runroot, 'runtimes', record.runtimeHandler);
    try {
      await removeCgroup(record.cgroupsPath);
    } catch (err) {
      log.error({ cgroup: record.cgroupsPath, err: errorMessage(err) }, 'cannot remove the cgroup of a container without runtime handler; a process may still run in it');
    }
    log.error(
      { handler: record.runtimeHandler, runtime_state_dir: runtimeStateDir, configured: this.handlers.names() },
      `runtime handler of the container is no longer configured, so its runtime state under ${runtimeStateDir} was not deleted; delete it with that runtime's delete command`,
    );
  }

  /**
   * Polls until the container has exited; returns false after `timeoutMs`. A driver with
   * waitForExit ends each pause as soon as the exit is recorded.
   */
  private async waitExited(id: string, timeoutMs: number, log: Logger): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let interval = 10;
    for (;;) {
      const record = this.store.get(id);
      if (!record) return true;
      if ((await this.refresh(record, log)).state === 'exited') return true;
      if (Date.now() >= deadline) return false;

      const pause = Math.min(interval, Math.max(1, deadline - Date.now()));
      const driver = this.handlers.list().find((candidate) => candidate.name === record.runtimeHandler)?.driver;
      await (driver?.waitForExit ? driver.waitForExit(id, pause) : sleep(pause));
      interval = Math.min(interval * 2, 100);
    }
  }

  /**
   * Brings a created or running record up to date with the runtime. An exit becomes final: the
   * record gets the exit code, finish time and reason and is persisted. Callers need not hold
   * the container's lock, so the change is applied to the store's latest copy and only while
   * the record exists. Throws NotFoundError when the container was removed meanwhile.
   */
  private async refresh(record: ContainerRecord, log: Logger): Promise<ContainerRecord> {
    if (record.state !== 'created' && record.state !== 'running') return record;
    const handler = this.handlers.list().find((candidate) => candidate.name === record.runtimeHandler);
    if (!handler) return handlerMissingView(record);

    let state;
    try {
      state = await handler.driver.state(record.id);
    } catch (err) {
      if (err instanceof NotFoundError) {
        log.warn('runtime has no state for the container; marking it exited');
        state = { id: record.id, status: 'stopped' as const, pid: 0 };
      } else {
        throw err;
      }
    }

    let exited = false;
    const updated = await this.store.update(record.id, (current) => {
      if (current.state !== 'created' && current.state !== 'running') return current;
      if (state.status === 'running' && current.state === 'created') {
        return { ...current, state: 'running', startedAtNs: current.startedAtNs ?? nowNs() };
      }
      if (state.status !== 'stopped') return current;

      exited = true;
      const exitCode = state.exitCode ?? 255;
      return {
        ...current,
        state: 'exited',
        exitCode,
        finishedAtNs: state.finishedAtNs !== undefined ? String(state.finishedAtNs) : nowNs(),
        reason: state.oomKilled ? 'OOMKilled' : exitCode === 0 ? 'Completed' : 'Error',
        message: state.exitCode === undefined ? 'exit code unknown: the container monitor recorded none' : '',
      };
    });
    if (!updated) throw new NotFoundError(`container ${record.id} not found (it was removed)`);
    if (exited) log.info({ exit_code: updated.exitCode, reason: updated.reason }, 'container exited');
    return updated;
  }

  private async resolveSeccomp(
    profile: SecurityProfile__Output | null,
    legacyPath: string,
    privileged: boolean,
    log: Logger,
  ): Promise<OciSeccomp | undefined> {
    let request: SecurityProfileRequest | undefined;
    if (profile) {
      request = { profileType: profile.profile_type, localhostRef: profile.localhost_ref };
    } else if (legacyPath !== '') {
      // The deprecated string form: "runtime/default", "unconfined" or "localhost/<path>".
      if (legacyPath === 'unconfined') request = { profileType: 'Unconfined' };
      else if (legacyPath === 'runtime/default' || legacyPath === 'docker/default') request = { profileType: 'RuntimeDefault' };
      else if (legacyPath.startsWith('localhost/')) request = { profileType: 'Localhost', localhostRef: legacyPath.slice('localhost'.length) };
      else throw new InvalidArgumentError(`seccomp_profile_path: ${JSON.stringify(legacyPath)} is not runtime/default, unconfined or localhost/<path>`);
    } else if (privileged || this.config.seccomp.unconfined_when_unspecified) {
      return undefined;
    } else {
      request = { profileType: 'RuntimeDefault' };
    }
    return this.seccomp.resolve(request, { privileged, log });
  }

  private async pidNamespace(sandbox: SandboxRecord, config: ContainerConfig__Output, infra: boolean): Promise<PidNamespace> {
    if (infra) return { kind: 'new' };
    const options = config.linux?.security_context?.namespace_options ?? null;
    const mode = options?.pid ?? sandbox.namespaces.pid;
    const where = 'config.linux.security_context.namespace_options.pid';

    switch (mode) {
      case 'NODE':
        return { kind: 'host' };
      case 'CONTAINER':
        return { kind: 'new' };
      case 'POD': {
        if (!sandbox.infraContainerId) {
          throw new InvalidArgumentError(`${where}: POD, but pod sandbox ${sandbox.id} was created without a shared PID namespace`);
        }
        return { kind: 'path', path: await this.pidNamespacePath(sandbox.infraContainerId, 'infra container') };
      }
      case 'TARGET': {
        const target = this.store.get(options?.target_id ?? '');
        if (!target || target.sandboxId !== sandbox.id) {
          throw new InvalidArgumentError(`${where}: TARGET names container ${JSON.stringify(options?.target_id ?? '')}, which is not in pod sandbox ${sandbox.id}`);
        }
        return { kind: 'path', path: await this.pidNamespacePath(target.id, 'target container') };
      }
      default:
        throw new InvalidArgumentError(`${where}: unknown mode ${String(mode)}`);
    }
  }

  private async pidNamespacePath(containerId: string, role: string): Promise<string> {
    const record = this.require(containerId);
    const state = await this.handlers.get(record.runtimeHandler).driver.state(containerId);
    if (state.status !== 'running' || state.pid <= 0) {
      throw new FailedPreconditionError(`${role} ${containerId} is ${state.status}, so its PID namespace cannot be joined`);
    }
    return `/proc/${state.pid}/ns/pid`;
  }
}

/** Waits for every operation, then throws the first failure, so one failure does not cut the rest short. */
async function settleAll(operations: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(operations);
  const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure) throw failure.reason;
}

function nameKey(sandboxId: string, config: ContainerConfig__Output): string {
  return `${sandboxId}_${config.metadata?.name ?? ''}_${config.metadata?.attempt ?? 0}`;
}

function nowNs(): string {
  return String(BigInt(Date.now()) * 1_000_000n);
}

function matchesLabels(labels: Record<string, string>, selector: Record<string, string>): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

/** Returns the log file under the pod's log directory, or undefined when the pod or container has none. */
function containerLogPath(sandbox: SandboxRecord, config: ContainerConfig__Output): string | undefined {
  const directory = sandbox.config.log_directory;
  if (!directory || !config.log_path) return undefined;
  const resolved = path.resolve(directory, config.log_path);
  if (!resolved.startsWith(`${path.resolve(directory)}/`)) {
    throw new InvalidArgumentError(
      `config.log_path: ${JSON.stringify(config.log_path)} leads outside the pod's log directory ${directory}; use a path relative to it`,
    );
  }
  return resolved;
}

/**
 * Returns how a created or running container whose runtime handler is no longer configured is
 * reported: exited with reason `Unknown`, because no configured runtime can read its state. The record on
 * disk keeps its last state in case the handler comes back.
 */
function handlerMissingView(record: ContainerRecord): ContainerRecord {
  return {
    ...record,
    state: 'exited',
    exitCode: record.exitCode ?? 255,
    finishedAtNs: record.finishedAtNs ?? '0',
    reason: 'Unknown',
    message: `runtime handler ${JSON.stringify(record.runtimeHandler)} is no longer configured, so the container's state cannot be read; it was ${record.state}`,
  };
}

/**
 * Returns the number of the signal StopContainer sends first: the request's, else the image's
 * StopSignal, else SIGTERM. An invalid request value fails the call. An invalid image value
 * only logs a warning and falls back to SIGTERM, because the image is not the caller's input.
 */
export function stopSignalOf(config: ContainerConfig__Output, image: ImageRecord, log: Logger): number {
  const requested: unknown = config.stop_signal ?? 'RUNTIME_DEFAULT';
  if (requested !== 'RUNTIME_DEFAULT') {
    // With enums as strings the loader passes a number only for a value outside the enum.
    const signal = typeof requested === 'string' ? parseSignal(requested) : undefined;
    if (signal === undefined) {
      throw new InvalidArgumentError(`config.stop_signal: ${JSON.stringify(requested)} is not a valid signal; use a value of the CRI Signal enum`);
    }
    return signal;
  }

  const fromImage = image.config.config?.StopSignal ?? '';
  if (fromImage.trim() === '') return SIGTERM;
  const signal = parseSignal(fromImage);
  if (signal === undefined) {
    log.warn({ image: image.id, stop_signal: fromImage }, 'image StopSignal is not a valid signal; using SIGTERM');
    return SIGTERM;
  }
  return signal;
}

/** Returns the stop signal number of a record, translating a name stored by an older build. */
function recordStopSignal(record: ContainerRecord, log: Logger): number {
  const signal = storedStopSignal(record.stopSignal);
  if (signal === undefined) {
    log.warn({ stop_signal: record.stopSignal }, 'stored stop signal is not a valid signal; using SIGTERM');
    return SIGTERM;
  }
  return signal;
}

/** Returns the config of the infra container that keeps a pod's shared PID namespace alive. */
function infraConfig(image: string): ContainerConfig__Output {
  return {
    metadata: { name: 'POD', attempt: 0 },
    image: { image, annotations: {}, user_specified_image: image, runtime_handler: '', image_ref: '' },
    command: [],
    args: [],
    working_dir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: {},
    log_path: '',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: null,
    windows: null,
    CDI_devices: [],
    stop_signal: 'SIGKILL',
  } as unknown as ContainerConfig__Output;
}

/**
 * Creates the directories the image declares as Volumes inside the rootfs, unless a request
 * mount covers them; their data then lives in the writable layer. A path whose components
 * include a symlink is skipped, so an image cannot make the daemon create host directories.
 */
async function createImageVolumes(rootfs: string, image: ImageRecord, mounted: string[], log: Logger): Promise<void> {
  for (const volume of Object.keys(image.config.config?.Volumes ?? {})) {
    const clean = path.posix.normalize(`/${volume}`);
    if (mounted.includes(clean)) continue;

    let current = rootfs;
    let safe = true;
    for (const part of clean.split('/').filter(Boolean)) {
      current = path.join(current, part);
      try {
        if ((await lstat(current)).isSymbolicLink()) {
          safe = false;
          break;
        }
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
        break;
      }
    }
    if (!safe) {
      log.warn({ volume }, 'image volume path contains a symlink; not creating it');
      continue;
    }
    await mkdir(path.join(rootfs, clean), { recursive: true, mode: 0o755 });
  }
}

let swapAccountingCache: Promise<boolean> | undefined;

/** True when the runtime can limit memory+swap: always on cgroup v2, with memory.memsw.* on v1. */
async function swapAccounting(): Promise<boolean> {
  swapAccountingCache ??= (async () => {
    const layout = await detectCgroupLayout();
    const memory = layout.v1Mounts.get('memory');
    if (!memory) return true;
    try {
      await access(path.join(memory, 'memory.memsw.limit_in_bytes'));
      return true;
    } catch {
      return false;
    }
  })();
  return swapAccountingCache;
}

