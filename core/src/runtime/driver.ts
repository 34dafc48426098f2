import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../log.js';
import type { OciLinuxResources } from './oci-spec.js';

/** The states a low-level runtime reports for one container, named as in the OCI runtime spec. */
export type ContainerRuntimeStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

export interface ContainerRuntimeState {
  id: string;
  status: ContainerRuntimeStatus;
  /** Host PID of the container's init process, 0 once it has exited. */
  pid: number;
  /** Set once the container has exited and its monitor recorded the code. */
  exitCode?: number;
  /** Unix time in nanoseconds, set with `exitCode`. */
  finishedAtNs?: bigint;
  /** True when the kernel's OOM killer ended the container, when the driver can tell. */
  oomKilled?: boolean;
}

export interface CreateContainerOptions {
  /** Container id, unique on this node. */
  id: string;
  /** Id of the pod sandbox the container belongs to; VM drivers group containers by it. */
  sandboxId: string;
  /** Directory holding `config.json`; the rootfs is already mounted where `root.path` points. */
  bundlePath: string;
  /** Host path of the CRI-format log the monitor writes; undefined means discard output. */
  logPath?: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  /** Request-scoped logger carrying the sandbox and container ids. */
  log: Logger;
}

export interface ExecSyncOptions {
  cmd: string[];
  /** 0 means no timeout. */
  timeoutMs: number;
  /** Output kept per stream; the rest is discarded and the result marks it truncated. */
  maxOutputBytes: number;
  log: Logger;
}

export interface ExecSyncResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
  timedOut: boolean;
  truncated: boolean;
}

export interface StreamOptions {
  cmd?: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  log: Logger;
}

/** A running exec or attach session; `wait` settles with the exit code (attach: when detached). */
export interface StreamSession {
  stdin?: Writable;
  stdout?: Readable;
  stderr?: Readable;
  resize(width: number, height: number): void;
  wait(): Promise<number>;
  close(): Promise<void>;
}

export interface DriverFeatures {
  /** Name and version of the runtime binary or shim, e.g. `runc 1.1.5`. */
  runtime: string;
  /** Features reported by the runtime itself (`runc features`), when it has that command. */
  reported?: Record<string, unknown>;
  pauseResume: boolean;
  updateResources: boolean;
  checkpoint: boolean;
  /** True for drivers that run each pod in a VM. */
  vm: boolean;
}

/**
 * One low-level runtime. Each configured runtime handler gets its own instance, made by the
 * driver plugin's factory with that handler's options.
 *
 * Contract for every method that takes an id: an id the runtime does not know throws
 * NotFoundError, except where a method says it is idempotent.
 */
export interface RuntimeDriver {
  /** The handler name this instance serves. */
  readonly handler: string;

  /** Reports the runtime's version and capabilities; cached after the first call. */
  features(): Promise<DriverFeatures>;

  /**
   * Creates the container from its bundle without starting the user process. On failure nothing
   * created by the call stays behind (no runtime state, monitor process or cgroup). Throws
   * FailedPreconditionError when the id already exists in this handler.
   */
  create(options: CreateContainerOptions): Promise<ContainerRuntimeState>;

  /**
   * Starts the user process of a created container. Throws NotFoundError for an unknown id, and
   * the runtime's own error for a container that is not in the created state.
   */
  start(id: string, log: Logger): Promise<void>;

  /**
   * Sends `signal` (a name such as `SIGTERM` or a Linux signal number) to the container's init
   * process. SIGKILL reaches every process of the container, also those left after its init
   * exited. Signalling a stopped container is not an error. Throws NotFoundError for an unknown
   * id.
   */
  kill(id: string, signal: string | number, log: Logger): Promise<void>;

  /** Deletes the runtime's state for the container; idempotent, a missing container is success. */
  delete(id: string, log: Logger): Promise<void>;

  /**
   * Returns the current state, including an exit code recorded while the daemon was down.
   * Throws NotFoundError for an unknown id.
   */
  state(id: string): Promise<ContainerRuntimeState>;

  /**
   * Waits until the container's exit may have been recorded, or for `timeoutMs`, whichever comes
   * first, so that a caller polling `state` can read an exit at once. Never rejects. Optional:
   * without it, callers sleep between polls.
   */
  waitForExit?(id: string, timeoutMs: number): Promise<void>;

  /**
   * Runs a command in the container, collects its output up to `maxOutputBytes` per stream and
   * kills the command at the timeout (the result then has `timedOut`). Throws
   * FailedPreconditionError when the container is not running.
   */
  execSync(id: string, options: ExecSyncOptions): Promise<ExecSyncResult>;

  /** Starts a streaming exec session (kubectl exec). May throw UnimplementedError. */
  exec(id: string, options: StreamOptions): Promise<StreamSession>;

  /** Attaches to the container's stdio held by its monitor (kubectl attach). May throw UnimplementedError. */
  attach(id: string, options: StreamOptions): Promise<StreamSession>;

  /** Applies new Linux resource limits to a running container. */
  updateResources(id: string, resources: OciLinuxResources, log: Logger): Promise<void>;

  pause(id: string, log: Logger): Promise<void>;
  resume(id: string, log: Logger): Promise<void>;

  /**
   * Makes the monitor close and reopen the container's log file (after log rotation). Throws
   * FailedPreconditionError when the monitor has exited.
   */
  reopenLog(id: string, log: Logger): Promise<void>;

  /** Stops background work (watchers, shim connections); containers keep running. */
  close(): Promise<void>;
}

/** What a driver factory receives besides its validated options. */
export interface DriverContext {
  handler: string;
  /** Directory for the driver's own state, under the daemon's run root, created by the core. */
  stateDir: string;
  /** The `runtime.conmon` setting: path of conmon, empty to search PATH. */
  conmonPath: string;
  /** Directory where container monitors write exit codes, created by the driver. */
  exitsDir: string;
  log: Logger;
}

/** The value a `runtime-driver` plugin's entry module exports. */
export interface RuntimeDriverFactory {
  create(options: Record<string, unknown>, context: DriverContext): Promise<RuntimeDriver>;
}
