import { access, constants, stat } from 'node:fs/promises';
import path from 'node:path';
import { FailedPreconditionError, isErrno } from '../../errors.js';

/**
 * Resolves the program to run: `configured` when set (it must be an executable file), else the
 * first `name` on PATH. Throws FailedPreconditionError naming what was searched, so start-up
 * stops with a message that says how to fix it.
 */
export async function findExecutable(name: string, configured: string, optionKey: string): Promise<string> {
  if (configured !== '') {
    if (!(await isExecutableFile(configured))) {
      throw new FailedPreconditionError(
        `${optionKey}: ${configured} is not an executable file; install ${name} or correct the path`,
      );
    }
    return path.resolve(configured);
  }

  const dirs = (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter(Boolean);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  throw new FailedPreconditionError(
    `${name} not found on PATH (${dirs.join(':')}); install it (Debian package "${name}") or set ${optionKey}`,
  );
}

async function isExecutableFile(file: string): Promise<boolean> {
  try {
    if (!(await stat(file)).isFile()) return false;
    await access(file, constants.X_OK);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'EACCES') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}
