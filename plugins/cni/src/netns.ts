import { statfs } from 'node:fs/promises';

/** f_type of the nsfs file system, which backs namespace files and their bind mounts. */
const NSFS_MAGIC = 0x6e736673;

/**
 * Returns true when `file` is a namespace file: /proc/<pid>/ns/net or a bind mount of one. A
 * pinned path whose mount is gone (after a reboot, or once the core removed it) is a plain file
 * or missing, and returns false.
 */
export async function isNamespaceFile(file: string): Promise<boolean> {
  if (file === '') return false;
  try {
    return (await statfs(file)).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}
