import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { CriClient } from './cri-client.js';
import type { PodSandboxConfig } from '../../src/cri/generated/runtime/v1/PodSandboxConfig.js';
import { removeCgroup } from '../../src/cgroups/paths.js';
import { cgroupDirs } from '../../src/cgroups/paths.js';
import { detectCgroupLayout } from '../../src/cgroups/layout.js';

/** Returns a pod sandbox config with a unique name; `overrides` replace top-level fields. */
export function podConfig(name: string, overrides: Partial<PodSandboxConfig> = {}): PodSandboxConfig {
  const suffix = randomBytes(4).toString('hex');
  return {
    metadata: { name: `${name}-${suffix}`, namespace: 'default', uid: `uid-${suffix}`, attempt: 0 },
    hostname: `${name}-host`,
    labels: { app: name, suite: 'berth-test' },
    annotations: { 'example.com/note': 'test' },
    ...overrides,
  };
}

/** Daemon config for runtime tests: no network provider and a cgroup parent unique to the run. */
export function runtimeTestConfig(extra: Record<string, unknown> = {}): { config: Record<string, unknown>; cgroupParent: string } {
  const cgroupParent = `/berth-test-${randomBytes(4).toString('hex')}`;
  const extraRuntime = (extra.runtime as Record<string, unknown> | undefined) ?? {};
  return {
    cgroupParent,
    config: {
      network: { provider: '' },
      ...extra,
      runtime: { cgroup_parent: cgroupParent, ...extraRuntime },
    },
  };
}

/** Removes every pod sandbox the daemon lists, with its containers; for `after` hooks. */
export async function removeAllPods(client: CriClient): Promise<void> {
  const { items } = await client.runtime.ListPodSandbox({});
  for (const item of items ?? []) await client.runtime.RemovePodSandbox({ pod_sandbox_id: item.id! });
}

/** Mount points under `dir` in this mount namespace. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((mountPoint) => mountPoint === dir || mountPoint.startsWith(`${dir}/`));
}

/** Entries of a directory, or an empty list when it does not exist. */
export async function entries(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Cgroup directories left below `parent` in any hierarchy. */
export async function cgroupsUnder(parent: string): Promise<string[]> {
  const layout = await detectCgroupLayout();
  const left: string[] = [];
  for (const dir of cgroupDirs(layout, parent)) {
    try {
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        if (entry.isDirectory()) left.push(path.join(dir, entry.name));
      }
    } catch {
      // This hierarchy has no such cgroup.
    }
  }
  return left;
}

/** Removes the test's cgroup parent, children first; ignores what is already gone. */
export async function removeCgroupParent(parent: string): Promise<void> {
  const layout = await detectCgroupLayout();
  for (const dir of cgroupDirs(layout, parent)) {
    for (const name of await entries(dir)) {
      for (const child of await entries(path.join(dir, name))) {
        if (/^berth-/.test(child)) await removeCgroup(`${parent}/${name}/${child}`).catch(() => undefined);
      }
      if (/^[0-9a-f]{64}$/.test(name)) await removeCgroup(`${parent}/${name}`).catch(() => undefined);
    }
  }
  await removeCgroup(parent).catch(() => undefined);
}
