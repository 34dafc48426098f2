import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestDaemon } from './daemon.js';
import { insecureRegistries, startImageDaemon } from './image-daemon.js';
import type { RuntimeImages } from './runtime-images.js';
import type { ContainerConfig } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import type { ContainerStatus__Output } from '../../src/cri/generated/runtime/v1/ContainerStatus.js';
import type { PodSandboxConfig } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { podConfig, releaseLeftovers, removeAllPods, removeCgroupParent, runtimeTestConfig } from './pods.js';

/**
 * Starts a daemon with the runc and crun handlers, the test registry as its only (plain HTTP)
 * registry, and a cgroup parent of its own. Returns the daemon and that cgroup parent.
 */
export async function startRuntimeDaemon(
  images: RuntimeImages,
  options: { dir?: string; cgroupParent?: string; runtime?: Record<string, unknown>; config?: Record<string, unknown> } = {},
): Promise<{ daemon: TestDaemon; cgroupParent: string }> {
  const setup = runtimeTestConfig();
  const cgroupParent = options.cgroupParent ?? setup.cgroupParent;
  const daemon = await startImageDaemon({
    dir: options.dir,
    registries: insecureRegistries([images.registry.host]),
    config: {
      runtimes: { runc: { driver: 'runc', options: {} }, crun: { driver: 'crun', options: {} } },
      default_runtime: 'runc',
      runtime: { cgroup_parent: cgroupParent, pause_image: images.pause, stop_timeout_seconds: 1, ...options.runtime },
      ...options.config,
    },
  });
  return { daemon, cgroupParent };
}

/**
 * Removes every pod of a daemon from startRuntimeDaemon, stops it, and releases what a failed
 * test left: mounts and monitors under its directory and its cgroup parent.
 */
export async function stopRuntimeDaemon(daemon: TestDaemon, cgroupParent: string): Promise<void> {
  await removeAllPods(daemon.client).catch((err: unknown) => console.error('cannot remove test pods', err));
  await daemon.stop();
  await releaseLeftovers(daemon.dir);
  await removeCgroupParent(cgroupParent);
}

/** A pod with a log directory under the daemon's temp dir; returns its id and config. */
export async function runPod(
  daemon: TestDaemon,
  handler: string,
  name: string,
  overrides: Partial<PodSandboxConfig> = {},
): Promise<{ id: string; config: PodSandboxConfig }> {
  const config = podConfig(name, { log_directory: path.join(daemon.dir, 'logs', `${name}-${randomBytes(3).toString('hex')}`), ...overrides });
  const { pod_sandbox_id: id } = await daemon.client.runtime.RunPodSandbox({ config, runtime_handler: handler });
  return { id: id!, config };
}

/** Container config running `command` from `image`, logging to `<name>.log`. */
export function containerConfig(name: string, image: string, command: string[], overrides: Partial<ContainerConfig> = {}): ContainerConfig {
  return {
    metadata: { name, attempt: 0 },
    image: { image },
    command,
    log_path: `${name}.log`,
    ...overrides,
    labels: { container: name, ...overrides.labels },
  };
}

/** Creates and starts a container; returns its id. */
export async function startContainer(daemon: TestDaemon, pod: { id: string; config: PodSandboxConfig }, config: ContainerConfig): Promise<string> {
  const { container_id: id } = await daemon.client.runtime.CreateContainer({ pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
  await daemon.client.runtime.StartContainer({ container_id: id! });
  return id!;
}

/** Polls ContainerStatus until the container has exited; fails after `timeoutMs`. */
export async function waitExited(daemon: TestDaemon, id: string, timeoutMs = 20_000): Promise<ContainerStatus__Output> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await daemon.client.runtime.ContainerStatus({ container_id: id });
    if (status?.state === 'CONTAINER_EXITED') return status as ContainerStatus__Output;
    if (Date.now() > deadline) throw new Error(`container ${id} is still ${status?.state} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Runs `cmd` with ExecSync and returns stdout, stderr and the exit code. */
export async function exec(daemon: TestDaemon, id: string, cmd: string[], timeout = 10): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const result = await daemon.client.runtime.ExecSync({ container_id: id, cmd, timeout });
  return { stdout: Buffer.from(result.stdout ?? '').toString(), stderr: Buffer.from(result.stderr ?? '').toString(), exitCode: result.exit_code ?? -1 };
}
