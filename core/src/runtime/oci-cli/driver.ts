import { spawn } from 'node:child_process';
import { constants as fsConstants, watch, type FSWatcher } from 'node:fs';
import { mkdir, open, readFile, readlink, rm, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../log.js';
import {
  FailedPreconditionError,
  InternalError,
  NotFoundError,
  UnimplementedError,
  errorMessage,
  isErrno,
} from '../../errors.js';
import { readJsonFile, writeJsonAtomic } from '../../state/json-file.js';
import { CommandError, runCommand } from '../../util/command.js';
import { killProcessTree } from '../../util/process-tree.js';
import type {
  ContainerRuntimeState,
  ContainerRuntimeStatus,
  CreateContainerOptions,
  DriverFeatures,
  ExecSyncOptions,
  ExecSyncResult,
  RuntimeDriver,
  StreamSession,
} from '../driver.js';
import type { OciLinuxResources, OciSpec } from '../oci-spec.js';
import { MonitorStartError, monitorPaths, startConmon, type MonitorPaths } from './conmon.js';

/** Everything an OCI-CLI driver instance needs, resolved and checked by `createOciCliDriver`. */
export interface OciCliDriverSettings {
  handler: string;
  /** Short runtime name for messages, e.g. `runc`. */
  runtimeName: string;
  /** Absolute path of the runtime binary. */
  binary: string;
  /** The runtime's `--root`: where it keeps its own container state. */
  runtimeRoot: string;
  /** Global flags given to every runtime call after `--root`. */
  extraArgs: string[];
  noPivot: boolean;
  /** Absolute path of conmon. */
  conmon: string;
  /** Directory where conmon writes `<id>` with the exit code. */
  exitsDir: string;
  /** The handler's state directory; per-container monitor files live below it. */
  stateDir: string;
  /** Time to wait for `create` to report the container PID. */
  createTimeoutMs: number;
  features: DriverFeatures;
  log: Logger;
}

/** Per-container record the driver persists, so that a restarted daemon finds the monitor again. */
interface MonitorRecord {
  id: string;
  bundlePath: string;
  logPath?: string;
  createdAtNs: string;
}

/** Output of `<runtime> state <id>`. */
interface RuntimeStateOutput {
  status: string;
  pid: number;
}

/**
 * A RuntimeDriver for any OCI runtime with the runc command line (runc, crun, youki, ...).
 * Each container is held by a conmon process that owns its stdio, writes the CRI log and
 * records the exit code, so containers keep running and their exits are not lost while the
 * daemon is down. All state lives in files, so a new instance picks up the containers of an
 * earlier one.
 */
export class OciCliDriver implements RuntimeDriver {
  readonly handler: string;
  /** Last status seen per container, so that listing running containers spawns no process. */
  private readonly statusCache = new Map<string, { status: ContainerRuntimeStatus; pid: number }>();
  /** inotify watch on the exits directory; undefined when it could not be set up. */
  private exitWatcher?: FSWatcher;
  /** Callers of waitForExit by container id, woken when conmon writes the container's exit file. */
  private readonly exitWaiters = new Map<string, Set<() => void>>();

  constructor(private readonly settings: OciCliDriverSettings) {
    this.handler = settings.handler;
    this.watchExits();
  }

  async features(): Promise<DriverFeatures> {
    return this.settings.features;
  }

  async create(options: CreateContainerOptions): Promise<ContainerRuntimeState> {
    const dir = this.containerDir(options.id);
    if (await readJsonFile<MonitorRecord>(path.join(dir, 'monitor.json'))) {
      throw new FailedPreconditionError(`container ${options.id}: already created by runtime handler "${this.handler}"`);
    }

    await mkdir(dir, { recursive: true, mode: 0o700 });
    const record: MonitorRecord = {
      id: options.id,
      bundlePath: options.bundlePath,
      logPath: options.logPath,
      createdAtNs: String(process.hrtime.bigint()),
    };
    // The driver's state directory is under the runroot, which a reboot empties along with the
    // runtime's own state, so its files need no flush to disk.
    await writeJsonAtomic(path.join(dir, 'monitor.json'), record, 0o600, { durable: false });

    let pid: number;
    try {
      pid = await startConmon({
        conmon: this.settings.conmon,
        runtime: this.settings.binary,
        runtimeArgs: this.globalArgs(),
        id: options.id,
        bundlePath: options.bundlePath,
        exitsDir: this.settings.exitsDir,
        logPath: options.logPath,
        stdin: options.stdin,
        stdinOnce: options.stdinOnce,
        tty: options.tty,
        systemdCgroup: false,
        noPivot: this.settings.noPivot,
        paths: this.paths(options.id),
        timeoutMs: this.settings.createTimeoutMs,
      });
    } catch (err) {
      await this.delete(options.id, options.log).catch((cleanupErr: unknown) =>
        options.log.error({ err: cleanupErr }, 'cannot clean up after a failed create'),
      );
      const message = `${this.settings.runtimeName} create of container ${options.id} failed: ${errorMessage(err)}`;
      throw err instanceof MonitorStartError ? new FailedPreconditionError(message) : new InternalError(message, { cause: err });
    }

    this.statusCache.set(options.id, { status: 'created', pid });
    options.log.debug({ pid, runtime: this.settings.runtimeName }, 'container created');
    return { id: options.id, status: 'created', pid };
  }

  async start(id: string, log: Logger): Promise<void> {
    await this.requireRecord(id);
    await this.runtime(['start', id]);
    const cached = this.statusCache.get(id);
    this.statusCache.set(id, { status: 'running', pid: cached?.pid ?? (await this.readPid(id)) });
    log.debug('container started');
  }

  async kill(id: string, signal: string | number, log: Logger): Promise<void> {
    await this.requireRecord(id);
    const name = typeof signal === 'number' ? String(signal) : signal;
    const all = name === 'SIGKILL' || name === '9';
    // SIGKILL is sent even after the init process exited, because in a PID namespace shared with
    // the pod the processes it forked outlive it in the container's cgroup.
    if (!all && (await this.readExit(id)) !== undefined) return;

    if (await this.signalInit(id, name, all, log)) return;

    // With --all the signal reaches every process of the container's cgroup, not only its init.
    const args = all ? ['kill', '--all', id, name] : ['kill', id, name];
    try {
      await this.runtime(args);
    } catch (err) {
      if (err instanceof CommandError && /not running|already finished|no such process|does not exist|not exist/i.test(err.stderr)) {
        log.debug({ signal: name }, 'container already stopped when signalled');
        return;
      }
      throw err;
    }
  }

  async delete(id: string, log: Logger): Promise<void> {
    const hadExit = (await this.readExit(id).catch(() => undefined)) !== undefined;
    try {
      await this.runtime(['delete', '--force', id]);
    } catch (err) {
      if (!(err instanceof CommandError && /does not exist|not exist|no such file/i.test(err.stderr))) {
        throw new InternalError(`${this.settings.runtimeName} delete of container ${id} failed: ${errorMessage(err)}`, { cause: err });
      }
    }

    await this.stopMonitor(id, hadExit, log);
    this.statusCache.delete(id);
    await rm(this.containerDir(id), { recursive: true, force: true });

    // conmon links <socket dir>/<id> to the container directory for its attach socket and does
    // not remove the link when it exits.
    for (const file of [this.exitFile(id), this.socketLink(id)]) {
      await unlink(file).catch((err: unknown) => {
        if (!isErrno(err, 'ENOENT')) throw err;
      });
    }
  }

  async state(id: string): Promise<ContainerRuntimeState> {
    await this.requireRecord(id);

    const exit = await this.readExit(id);
    if (exit) {
      this.statusCache.set(id, { status: 'stopped', pid: 0 });
      return { id, status: 'stopped', pid: 0, ...exit };
    }

    // A created or running container whose init this driver started needs no runtime call: while
    // the init's PID is alive the status is unchanged, and once it is gone the container has
    // stopped. Only this driver moves a container from created to running.
    const cached = this.statusCache.get(id);
    if (cached && (cached.status === 'running' || cached.status === 'created') && cached.pid > 0) {
      if (isAlive(cached.pid)) return { id, status: cached.status, pid: cached.pid };
      return this.awaitExitFile(id);
    }

    const output = await this.runtimeState(id);
    if (!output) {
      // The runtime forgot the container (its state is volatile) and conmon left no exit code.
      return { id, status: 'stopped', pid: 0 };
    }

    const status = toStatus(output.status);
    if (status === 'stopped') return this.awaitExitFile(id);

    this.statusCache.set(id, { status, pid: output.pid });
    return { id, status, pid: output.pid };
  }

  async waitForExit(id: string, timeoutMs: number): Promise<void> {
    if (!this.exitWatcher) {
      await sleep(timeoutMs);
      return;
    }

    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    const waiters = this.exitWaiters.get(id) ?? new Set<() => void>();
    waiters.add(wake);
    this.exitWaiters.set(id, waiters);
    const timer = setTimeout(wake, timeoutMs);
    try {
      // The file may have been written before the waiter was registered.
      if (await fileExists(this.exitFile(id))) return;
      await woken;
    } finally {
      clearTimeout(timer);
      waiters.delete(wake);
      if (waiters.size === 0 && this.exitWaiters.get(id) === waiters) this.exitWaiters.delete(id);
    }
  }

  /**
   * Returns the state of a container whose init has ended. conmon writes the exit file a moment
   * after the process ends, so this waits up to 500 ms for it before reporting an unknown exit code.
   */
  private async awaitExitFile(id: string): Promise<ContainerRuntimeState> {
    const deadline = Date.now() + 500;
    for (;;) {
      const exit = await this.readExit(id);
      if (exit) {
        this.statusCache.set(id, { status: 'stopped', pid: 0 });
        return { id, status: 'stopped', pid: 0, ...exit };
      }
      const left = deadline - Date.now();
      if (left <= 0) return { id, status: 'stopped', pid: 0 };
      await this.waitForExit(id, Math.min(25, left));
    }
  }

  /**
   * Sets up the inotify watch that wakes waitForExit callers. Without it (the directory is
   * missing, or inotify watches are used up) the callers sleep for their whole timeout.
   */
  private watchExits(): void {
    try {
      this.exitWatcher = watch(this.settings.exitsDir, { persistent: false }, (_event, filename) => {
        const waiters = filename ? this.exitWaiters.get(filename.toString()) : undefined;
        if (waiters) for (const wake of [...waiters]) wake();
      });
    } catch (err) {
      this.settings.log.warn({ exits_dir: this.settings.exitsDir, err: errorMessage(err) }, 'cannot watch the container exits directory; stop waits fall back to polling');
      return;
    }
    this.exitWatcher.on('error', (err) => {
      this.settings.log.warn({ exits_dir: this.settings.exitsDir, err: errorMessage(err) }, 'watch of the container exits directory failed; stop waits fall back to polling');
      this.exitWatcher?.close();
      this.exitWatcher = undefined;
      for (const waiters of this.exitWaiters.values()) for (const wake of [...waiters]) wake();
    });
  }

  async execSync(id: string, options: ExecSyncOptions): Promise<ExecSyncResult> {
    const record = await this.requireRecord(id);
    const current = await this.state(id);
    if (current.status !== 'running') {
      throw new FailedPreconditionError(`container ${id} is ${current.status}, not running; cannot exec in it`);
    }

    const spec = JSON.parse(await readFile(path.join(record.bundlePath, 'config.json'), 'utf8')) as OciSpec;
    if (!spec.process) throw new InternalError(`container ${id}: bundle config.json has no process section`);
    const processSpec = { ...spec.process, args: options.cmd, terminal: false };
    delete processSpec.consoleSize;

    const token = randomBytes(6).toString('hex');
    const processFile = path.join(this.containerDir(id), `exec-${token}.json`);
    const pidFile = path.join(this.containerDir(id), `exec-${token}.pid`);
    await writeJsonAtomic(processFile, processSpec, 0o600, { durable: false });

    try {
      return await this.runExec(id, processFile, pidFile, options);
    } finally {
      await rm(processFile, { force: true });
      await rm(pidFile, { force: true });
    }
  }

  async exec(): Promise<StreamSession> {
    // NOTE: streaming exec needs the kubelet's streaming server (SPDY/WebSocket), which berth
    // does not serve yet; the Exec RPC returns UNIMPLEMENTED before reaching the driver.
    throw new UnimplementedError(`runtime handler "${this.handler}": streaming exec is not implemented`);
  }

  async attach(): Promise<StreamSession> {
    // NOTE: attach needs the same streaming server as exec; conmon's attach socket is ready for it.
    throw new UnimplementedError(`runtime handler "${this.handler}": attach is not implemented`);
  }

  async updateResources(id: string, resources: OciLinuxResources, log: Logger): Promise<void> {
    await this.requireRecord(id);
    const file = path.join(this.containerDir(id), `resources-${randomBytes(6).toString('hex')}.json`);
    await writeJsonAtomic(file, resources, 0o600, { durable: false });
    try {
      await this.runtime(['update', '--resources', file, id]);
      log.debug({ resources }, 'container resources updated');
    } catch (err) {
      throw new InternalError(`${this.settings.runtimeName} update of container ${id} failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      await rm(file, { force: true });
    }
  }

  async pause(id: string, log: Logger): Promise<void> {
    await this.requireRecord(id);
    await this.runtime(['pause', id]);
    this.statusCache.set(id, { status: 'paused', pid: this.statusCache.get(id)?.pid ?? 0 });
    log.debug('container paused');
  }

  async resume(id: string, log: Logger): Promise<void> {
    await this.requireRecord(id);
    await this.runtime(['resume', id]);
    this.statusCache.delete(id);
    log.debug('container resumed');
  }

  async reopenLog(id: string, log: Logger): Promise<void> {
    const record = await this.requireRecord(id);

    // conmon reads "<event> <height> <width>\n" records from the `ctl` FIFO in the bundle; event
    // 2 makes it close and reopen its log file. O_NONBLOCK fails with ENXIO when no conmon reads.
    let handle;
    try {
      handle = await open(path.join(record.bundlePath, 'ctl'), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
    } catch (err) {
      if (isErrno(err, 'ENXIO') || isErrno(err, 'ENOENT')) {
        throw new FailedPreconditionError(`container ${id}: its monitor is not running, so its log cannot be reopened`);
      }
      throw err;
    }
    try {
      await handle.write('2 0 0\n');
    } finally {
      await handle.close();
    }
    log.debug('asked the monitor to reopen the container log');
  }

  async close(): Promise<void> {
    this.statusCache.clear();
    this.exitWatcher?.close();
    this.exitWatcher = undefined;
    for (const waiters of this.exitWaiters.values()) for (const wake of [...waiters]) wake();
  }

  /**
   * Signals the container's init directly instead of spawning `<runtime> kill`, when its PID is
   * in the status cache and still belongs to the container, which holds when the process's cgroup
   * path contains the container id. SIGKILL for every process is sent this way only to the init of
   * a PID namespace of the container's own, because the kernel kills all other processes of a
   * PID namespace when its init dies (pid_namespaces(7)). Returns false to leave the signal to
   * the runtime.
   */
  private async signalInit(id: string, signal: string, all: boolean, log: Logger): Promise<boolean> {
    const cached = this.statusCache.get(id);
    if (!cached || cached.pid <= 0 || (cached.status !== 'running' && cached.status !== 'created')) return false;
    const number = /^\d+$/.test(signal) ? Number(signal) : os.constants.signals[signal as NodeJS.Signals];
    if (number === undefined) return false;

    let status: string;
    let cgroups: string;
    try {
      [status, cgroups] = await Promise.all([readFile(`/proc/${cached.pid}/status`, 'utf8'), readFile(`/proc/${cached.pid}/cgroup`, 'utf8')]);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return false;
      throw err;
    }
    if (!cgroups.split('\n').some((line) => line.includes(id))) return false;
    if (all) {
      // "NSpid: <host pid> ... 1": the process is PID 1 of the innermost of its PID namespaces.
      const nsPids = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
      if (nsPids.length < 2 || nsPids[nsPids.length - 1] !== '1') return false;
    }

    try {
      process.kill(cached.pid, number);
    } catch (err) {
      if (isErrno(err, 'ESRCH')) return false;
      throw err;
    }
    log.debug({ pid: cached.pid, signal }, 'signalled the container init directly');
    return true;
  }

  /** PID of the container's conmon, or undefined when it has exited (used by stats and tests). */
  async monitorPid(id: string): Promise<number | undefined> {
    const pid = await readPidFile(this.paths(id).conmonPidFile);
    return pid !== undefined && isAlive(pid) ? pid : undefined;
  }

  private async runExec(id: string, processFile: string, pidFile: string, options: ExecSyncOptions): Promise<ExecSyncResult> {
    const child = spawn(this.settings.binary, [...this.globalArgs(), 'exec', '--process', processFile, '--pid-file', pidFile, id], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });

    const stdout = new CappedBuffer(options.maxOutputBytes);
    const stderr = new CappedBuffer(options.maxOutputBytes);
    child.stdout.on('data', (chunk: Buffer) => stdout.add(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.add(chunk));

    let timedOut = false;
    const timer = options.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          void this.killExec(id, pidFile, child.pid, options.log)
            .catch((err: unknown) => options.log.error({ err }, 'failed to kill a timed-out exec'))
            .finally(() => {
              // A process that left the exec's tree (a daemon that reparented itself) may still
              // hold the output pipes, so 'close' would wait for it. Drop the pipes instead.
              child.stdout.destroy();
              child.stderr.destroy();
            });
        }, options.timeoutMs)
      : undefined;

    const exitCode = await new Promise<number>((resolve, reject) => {
      child.once('error', (err) => reject(new InternalError(`cannot run ${this.settings.runtimeName} exec: ${err.message}`)));
      child.once('close', (code, signal) => resolve(code ?? 128 + signalNumber(signal)));
    }).finally(() => clearTimeout(timer));

    return {
      stdout: stdout.value(),
      stderr: stderr.value(),
      exitCode,
      timedOut,
      truncated: stdout.truncated || stderr.truncated,
    };
  }

  /**
   * Kills a timed-out exec: first the process inside the container with every process it forked,
   * then the runtime's exec.
   */
  private async killExec(id: string, pidFile: string, runtimePid: number | undefined, log: Logger): Promise<void> {
    const pid = await readPidFile(pidFile);
    if (pid !== undefined && (await this.sharesMountNamespace(id, pid))) {
      const killed = await killProcessTree(pid, log);
      log.debug({ pids: killed }, 'killed the processes of a timed-out exec');
    } else if (pid !== undefined) {
      log.warn({ pid }, 'timed-out exec process has exited or left the container; killing only the runtime exec');
    }
    if (runtimePid === undefined) return;
    try {
      process.kill(runtimePid, 'SIGKILL');
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) log.warn({ pid: runtimePid, err }, 'failed to kill a timed-out runtime exec');
    }
  }

  /**
   * Checks that `pid` is in the mount namespace of the container's init. Every container has a
   * mount namespace of its own, so the check separates an exec process from a host process that
   * reused its PID after it exited.
   */
  private async sharesMountNamespace(id: string, pid: number): Promise<boolean> {
    const init = this.statusCache.get(id)?.pid || (await this.readPid(id));
    if (init <= 0) return false;
    try {
      const [own, container] = await Promise.all([readlink(`/proc/${pid}/ns/mnt`), readlink(`/proc/${init}/ns/mnt`)]);
      return own === container;
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return false;
      throw err;
    }
  }

  /**
   * Makes sure the container's conmon ends. After an exit conmon needs about a second to drain
   * and quit by itself, so a delete does not wait for it: a timer checks later and kills a
   * monitor that is still there. A monitor whose container never recorded an exit is given the
   * same time before it is killed, because nothing else would end it.
   */
  private async stopMonitor(id: string, hadExit: boolean, log: Logger): Promise<void> {
    const pid = await readPidFile(this.paths(id).conmonPidFile);
    if (pid === undefined || !isAlive(pid)) return;

    const reap = async (): Promise<void> => {
      if (!isAlive(pid) || !(await isConmonOf(pid, id))) return;
      log.warn({ conmon_pid: pid }, 'container monitor still running after delete; killing it');
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) {
        if (!isErrno(err, 'ESRCH')) log.error({ conmon_pid: pid, err }, 'cannot kill container monitor');
      }
    };

    if (hadExit) {
      setTimeout(() => void reap(), MONITOR_EXIT_GRACE_MS).unref();
      return;
    }
    for (let waited = 0; waited < MONITOR_EXIT_GRACE_MS && isAlive(pid); waited += 25) await sleep(25);
    await reap();
  }

  private async runtimeState(id: string): Promise<RuntimeStateOutput | undefined> {
    try {
      const { stdout } = await this.runtime(['state', id]);
      return JSON.parse(stdout) as RuntimeStateOutput;
    } catch (err) {
      if (err instanceof CommandError && /does not exist|not exist|no such file/i.test(err.stderr)) return undefined;
      throw new InternalError(`${this.settings.runtimeName} state of container ${id} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async readExit(id: string): Promise<Pick<ContainerRuntimeState, 'exitCode' | 'finishedAtNs' | 'oomKilled'> | undefined> {
    let text: string;
    let finishedAtNs: bigint;
    try {
      text = await readFile(this.exitFile(id), 'utf8');
      finishedAtNs = (await stat(this.exitFile(id), { bigint: true })).mtimeNs;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }

    const exitCode = Number.parseInt(text.trim(), 10);
    if (!Number.isInteger(exitCode)) return undefined;
    const oomKilled = await fileExists(path.join(this.containerDir(id), 'oom'));
    return { exitCode, finishedAtNs, oomKilled };
  }

  private async readPid(id: string): Promise<number> {
    return (await readPidFile(this.paths(id).containerPidFile)) ?? 0;
  }

  private async requireRecord(id: string): Promise<MonitorRecord> {
    const record = await readJsonFile<MonitorRecord>(path.join(this.containerDir(id), 'monitor.json'));
    if (!record) throw new NotFoundError(`container ${id} not found in runtime handler "${this.handler}"`);
    return record;
  }

  private runtime(args: string[]): Promise<{ stdout: string; stderr: string }> {
    return runCommand(this.settings.binary, [...this.globalArgs(), ...args], { timeoutMs: 120_000 });
  }

  private globalArgs(): string[] {
    return ['--root', this.settings.runtimeRoot, ...this.settings.extraArgs];
  }

  private containerDir(id: string): string {
    return path.join(this.settings.stateDir, 'containers', id);
  }

  private paths(id: string): MonitorPaths {
    return monitorPaths(this.containerDir(id), path.join(this.settings.stateDir, 'sockets'));
  }

  private socketLink(id: string): string {
    return path.join(this.paths(id).socketDir, id);
  }

  private exitFile(id: string): string {
    return path.join(this.settings.exitsDir, id);
  }
}

/** Time conmon gets to quit by itself once its container is gone (it takes about 1.2 s with conmon 2.1.6). */
const MONITOR_EXIT_GRACE_MS = 3000;

/** Keeps the first `limit` bytes of a stream and counts what it drops. */
class CappedBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  truncated = false;

  constructor(private readonly limit: number) {}

  add(chunk: Buffer): void {
    const room = this.limit - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (kept.length < chunk.length) this.truncated = true;
    this.chunks.push(kept);
    this.size += kept.length;
  }

  value(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

function toStatus(status: string): ContainerRuntimeStatus {
  switch (status) {
    case 'creating':
    case 'created':
    case 'running':
    case 'paused':
    case 'stopped':
      return status;
    default:
      return 'stopped';
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}

async function isConmonOf(pid: number, id: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('conmon') && cmdline.includes(id);
  } catch {
    return false;
  }
}

async function readPidFile(file: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(file, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

async function fileExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? os.constants.signals[signal] ?? 0 : 0;
}
