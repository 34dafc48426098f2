import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { MS_NODEV, MS_NOEXEC, MS_NOSUID, mountAsync, umount2Async } from '../image/libc.js';
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

  const paths = pinnedPaths(dir, kinds);
  const args: string[] = [];
  for (const [kind, file] of Object.entries(paths)) {
    await (await open(file, 'w', 0o444)).close();
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

/** Returns the file that `pinNamespaces(dir, kinds)` pins each namespace kind on. */
export function pinnedPaths(dir: string, kinds: PinnedKind[]): Partial<Record<PinnedKind, string>> {
  const paths: Partial<Record<PinnedKind, string>> = {};
  for (const kind of kinds) paths[kind] = path.join(dir, kind);
  return paths;
}

/** Returns the directory that `mountShm(dir, …)` mounts the pod's /dev/shm on. */
export function shmPathOf(dir: string): string {
  return path.join(dir, 'shm');
}

/** Unmounts and deletes pinned namespace files; idempotent, a missing file is success. */
export async function unpinNamespaces(files: string[]): Promise<void> {
  await releasePodMounts(files);
}

/**
 * Unmounts the pinned namespace files and the pod's /dev/shm, then deletes them; idempotent, a
 * missing file or directory is success.
 */
export async function releasePodMounts(namespaceFiles: string[], shmPath?: string): Promise<void> {
  const targets = shmPath ? [...namespaceFiles, shmPath] : namespaceFiles;
  if (targets.length === 0) return;

  const mountPoints = await currentMountPoints();
  for (const target of targets) {
    if (mountPoints.has(path.resolve(target))) await umount2Async(target, 0);
  }

  for (const file of namespaceFiles) await rm(file, { force: true });
  if (shmPath) await rm(shmPath, { recursive: true, force: true });
}

/** Returns true when `file` exists and is a pinned namespace (an nsfs bind mount). */
export async function isPinned(file: string): Promise<boolean> {
  return isMountPoint(file);
}

/** Mounts the pod's /dev/shm: a tmpfs of `sizeBytes`, shared by its containers. */
export async function mountShm(dir: string, sizeBytes: number): Promise<string> {
  const target = shmPathOf(dir);
  await mkdir(target, { recursive: true, mode: 0o755 });
  await mountAsync('shm', target, 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, `mode=1777,size=${sizeBytes}`);
  return target;
}

/** Unmounts the pod's /dev/shm; idempotent. */
export async function unmountShm(target: string): Promise<void> {
  await releasePodMounts([], target);
}

/** Returns true when `target` is the mount point of a mount in this mount namespace. */
export async function isMountPoint(target: string): Promise<boolean> {
  try {
    await stat(target);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
  return (await currentMountPoints()).has(path.resolve(target));
}

/** Mount points of this mount namespace, from /proc/self/mountinfo. */
async function currentMountPoints(): Promise<Set<string>> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const mountPoints = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field !== undefined) mountPoints.add(unescapeMountPath(field));
  }
  return mountPoints;
}

function unescapeMountPath(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
