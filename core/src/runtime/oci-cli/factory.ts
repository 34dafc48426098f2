import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { FailedPreconditionError, errorMessage } from '../../errors.js';
import { runCommand } from '../../util/command.js';
import type { DriverContext, DriverFeatures } from '../driver.js';
import { findExecutable } from './binary.js';
import { OciCliDriver } from './driver.js';

/** The options every OCI-CLI driver plugin takes; each plugin's options schema declares them. */
export interface OciCliOptions {
  /** Path of the runtime binary; empty searches PATH. */
  binary_path?: string;
  /** The runtime's `--root`; empty means `<handler state dir>/root`. */
  root?: string;
  systemd_cgroup?: boolean;
  /** Extra global flags for every runtime call, e.g. `["--debug"]`. */
  extra_args?: string[];
  no_pivot?: boolean;
  /** Seconds to wait for the runtime to create a container. */
  create_timeout_seconds?: number;
}

export interface OciCliDriverSpec {
  /** Name of the runtime binary searched on PATH, e.g. `runc`. */
  runtimeName: string;
  options: OciCliOptions;
  context: DriverContext;
  /**
   * Host checks run once at start-up, after the binary is found; throws to stop start-up with a
   * message that tells how to fix the host.
   */
  preflight?: (binary: string) => Promise<void>;
}

/**
 * Builds an OciCliDriver: finds the runtime and conmon, reads the runtime's version and
 * features, runs the plugin's host checks and prepares the state directories. Throws
 * FailedPreconditionError with the fix when the runtime cannot work on this host.
 */
export async function createOciCliDriver(spec: OciCliDriverSpec): Promise<OciCliDriver> {
  const { context, options, runtimeName } = spec;
  const optionKey = `runtimes.${context.handler}.options`;

  if (options.systemd_cgroup) {
    throw new FailedPreconditionError(
      `${optionKey}.systemd_cgroup: true is not supported; berth manages container cgroups through cgroupfs (RuntimeConfig reports CGROUPFS), so set it to false`,
    );
  }

  const binary = await findExecutable(runtimeName, options.binary_path ?? '', `${optionKey}.binary_path`);
  const conmon = await findExecutable('conmon', context.conmonPath, 'runtime.conmon');
  await spec.preflight?.(binary);

  const features = await discoverFeatures(runtimeName, binary);
  const runtimeRoot = options.root || path.join(context.stateDir, 'root');
  await mkdir(runtimeRoot, { recursive: true, mode: 0o700 });
  await mkdir(path.join(context.stateDir, 'containers'), { recursive: true, mode: 0o700 });
  await mkdir(path.join(context.stateDir, 'sockets'), { recursive: true, mode: 0o700 });
  await mkdir(context.exitsDir, { recursive: true, mode: 0o700 });

  context.log.info({ binary, conmon, runtime_root: runtimeRoot, version: features.runtime }, `${runtimeName} driver ready`);
  return new OciCliDriver({
    handler: context.handler,
    runtimeName,
    binary,
    runtimeRoot,
    extraArgs: options.extra_args ?? [],
    noPivot: options.no_pivot ?? false,
    conmon,
    exitsDir: context.exitsDir,
    stateDir: context.stateDir,
    createTimeoutMs: (options.create_timeout_seconds ?? 60) * 1000,
    features,
    log: context.log,
  });
}

/**
 * Reads `<binary> --version` and, where the runtime has it, `<binary> features` (runc 1.1+).
 * A runtime without the features command is not an error.
 */
export async function discoverFeatures(runtimeName: string, binary: string): Promise<DriverFeatures> {
  let versionLine: string;
  try {
    versionLine = (await runCommand(binary, ['--version'], { timeoutMs: 10_000 })).stdout.split('\n')[0] ?? '';
  } catch (err) {
    throw new FailedPreconditionError(`${binary} --version failed, so the runtime cannot be used: ${errorMessage(err)}`);
  }
  const version = /version\s+(\S+)/i.exec(versionLine)?.[1] ?? 'unknown';

  let reported: Record<string, unknown> | undefined;
  try {
    reported = JSON.parse((await runCommand(binary, ['features'], { timeoutMs: 10_000 })).stdout) as Record<string, unknown>;
  } catch {
    reported = undefined;
  }

  return {
    runtime: `${runtimeName} ${version}`,
    reported,
    pauseResume: true,
    updateResources: true,
    checkpoint: false,
    vm: false,
  };
}
