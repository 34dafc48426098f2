import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { runCommand } from '../util/command.js';

/** Namespaces a pod sandbox pins; PID sharing is held by an infra container instead. */
export type PinnedKind = 'net' | 'ipc' | 'uts';

/** OCI namespace type of each pinned kind. */
export const OCI_NAMESPACE_TYPE = { net: 'network', ipc: 'ipc', uts: 'uts' } as const;

/**
 * Creates the pod's namespaces without a pause process: `unshare` makes them and bind-mounts
 * each one onto `<dir>/<kind>`, which keeps it alive with no process inside. Containers join
 * them by path. The network namespace gets its loopback interface up. Returns the paths.
 */
export async function pinNamespaces(dir: string, kinds: PinnedKind[]): Promise<Partial<Record<PinnedKind, string>>> {
  if (kinds.length === 0) return {};
  await mkdir(dir, { recursive: true, mode: 0o711 });

  const paths: Partial<Record<PinnedKind, string>> = {};
  const args: string[] = [];
  for (const kind of kinds) {
    const file = path.join(dir, kind);
    await (await open(file, 'w', 0o444)).close();
    paths[kind] = file;
    args.push(`--${kind}=${file}`);
  }

  const command = kinds.includes('net') ? ['ip', 'link', 'set', 'lo', 'up'] : ['true'];
  try {
    await runCommand('unshare', [...args, '--', ...command], { timeoutMs: 30_000 });
  } catch (err) {
    await unpinNamespaces(Object.values(paths));
    throw err;
  }
  return paths;
}

/** Unmounts and deletes pinned namespace files; idempotent, a missing file is success. */
export async function unpinNamespaces(files: string[]): Promise<void> {
  const mounted: string[] = [];
  for (const file of files) {
    if (await isMountPoint(file)) mounted.push(file);
  }
  if (mounted.length > 0) await runCommand('umount', mounted, { timeoutMs: 30_000 });
  for (const file of files) await rm(file, { force: true });
}

/** Returns true when `file` exists and is a pinned namespace (an nsfs bind mount). */
export async function isPinned(file: string): Promise<boolean> {
  return isMountPoint(file);
}

/** Mounts the pod's /dev/shm: a tmpfs of `sizeBytes`, shared by its containers. */
export async function mountShm(dir: string, sizeBytes: number): Promise<string> {
  const target = path.join(dir, 'shm');
  await mkdir(target, { recursive: true, mode: 0o755 });
  await runCommand('mount', ['-t', 'tmpfs', '-o', `mode=1777,size=${sizeBytes},nosuid,nodev,noexec`, 'shm', target], { timeoutMs: 30_000 });
  return target;
}

/** Unmounts the pod's /dev/shm; idempotent. */
export async function unmountShm(target: string): Promise<void> {
  if (await isMountPoint(target)) await runCommand('umount', [target], { timeoutMs: 30_000 });
  await rm(target, { recursive: true, force: true });
}

/** Returns true when `target` is the mount point of a mount in this mount namespace. */
export async function isMountPoint(target: string): Promise<boolean> {
  try {
    await stat(target);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
  const resolved = path.resolve(target);
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo.split('\n').some((line) => unescapeMountPath(line.split(' ')[4] ?? '') === resolved);
}

function unescapeMountPath(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
