import { rmdir } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../errors.js';
import { detectCgroupLayout, type CgroupLayout } from './layout.js';

/** Lists the directories of a cgroupfs path (e.g. `/berth/pod1`) in every mounted hierarchy. */
export function cgroupDirs(layout: CgroupLayout, cgroupPath: string): string[] {
  const relative = cgroupPath.replace(/^\/+/, '');
  const roots = new Set<string>(layout.v1Mounts.values());
  if (layout.unifiedMount) roots.add(layout.unifiedMount);
  return [...roots].map((root) => path.join(root, relative));
}

/**
 * Removes the cgroup `cgroupPath` from every hierarchy. Idempotent. Throws when a directory
 * still has processes or children (EBUSY/ENOTEMPTY), since that means something still runs.
 */
export async function removeCgroup(cgroupPath: string): Promise<void> {
  if (cgroupPath.replace(/\/+/g, '') === '') throw new Error('refusing to remove the root cgroup');
  const layout = await detectCgroupLayout();
  for (const dir of cgroupDirs(layout, cgroupPath)) {
    try {
      await rmdir(dir);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
}
