import { mkdir, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { errorMessage, isErrno } from '../errors.js';
import { readJsonFile, writeJsonAtomic } from './json-file.js';

/**
 * A directory of JSON records keyed by id (`<dir>/<id>.json`), each written atomically.
 * It keeps no cache: the services own the in-memory copies.
 */
export class RecordStore<T extends { id: string }> {
  constructor(
    readonly dir: string,
    private readonly kind: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  async put(record: T): Promise<void> {
    await writeJsonAtomic(this.file(record.id), record);
  }

  /** Deletes the record; idempotent. */
  async delete(id: string): Promise<void> {
    try {
      await unlink(this.file(id));
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }

  /**
   * Loads every record. A record that cannot be parsed is logged and skipped, so that one bad
   * file does not stop the daemon; leftover temp files of an interrupted write are removed.
   */
  async loadAll(log: Logger): Promise<T[]> {
    const records: T[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      const file = path.join(this.dir, name);
      if (name.startsWith('.') && name.endsWith('.tmp')) {
        await unlink(file).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.json')) continue;

      try {
        const record = await readJsonFile<T>(file);
        if (record) records.push(record);
      } catch (err) {
        log.error({ file, err: errorMessage(err) }, `cannot read ${this.kind} record; skipping it`);
      }
    }
    return records;
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
}
