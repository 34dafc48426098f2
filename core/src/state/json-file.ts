import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../errors.js';

/**
 * Writes `data` as JSON to `file` atomically: a temp file in the same directory is written,
 * flushed to disk and renamed over `file`, and then the directory is flushed so that the new
 * name survives a crash too. A reader or a crash sees the old or the new content, never a
 * partial one.
 *
 * With `durable: false` both flushes are skipped, for files under a directory that does not
 * outlive a reboot (the runroot, a tmpfs in production). Readers still never see a partial
 * file, and a crash of the daemon alone loses nothing, because the page cache keeps the data.
 */
export async function writeJsonAtomic(file: string, data: unknown, mode = 0o600, options: { durable?: boolean } = {}): Promise<void> {
  const durable = options.durable ?? true;
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.writeFile(`${JSON.stringify(data, null, 2)}\n`);
    if (durable) await handle.sync();
  } finally {
    await handle.close();
  }

  try {
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  if (durable) await syncDirectory(path.dirname(file));
}

/** Flushes the directory `dir` itself to disk, which makes a rename or a new entry in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Reads and parses a JSON file; returns undefined when it does not exist. */
export async function readJsonFile<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  return JSON.parse(text) as T;
}
