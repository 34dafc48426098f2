import { access } from 'node:fs/promises';
import { isErrno } from '../errors.js';

/** Returns whether `file` exists; errors other than ENOENT (EACCES, EIO) are raised. */
export async function pathExists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}
