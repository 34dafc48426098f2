import { mkdir, readdir, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import { errorMessage, isErrno } from '../errors.js';
import { readJsonFile, syncDirectory, writeJsonAtomic } from './json-file.js';

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

  /** Deletes the record and flushes the directory, so that it stays deleted after a crash; idempotent. */
  async delete(id: string): Promise<void> {
    try {
      await unlink(this.file(id));
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    await syncDirectory(this.dir);
  }

  /**
   * Loads every record. A record that cannot be parsed, or whose id does not match its file
   * name, is renamed to `<name>.json.corrupt` and logged, so that one bad file neither stops the
   * daemon nor is lost. Leftover temp files of an interrupted write are removed.
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
        if (record === undefined) continue;
        checkRecord(record, name.slice(0, -'.json'.length));
        records.push(record);
      } catch (err) {
        await this.moveAside(file, errorMessage(err), log);
      }
    }
    return records;
  }

  private async moveAside(file: string, reason: string, log: Logger): Promise<void> {
    const target = `${file}.corrupt`;
    try {
      await rename(file, target);
      log.error({ file, moved_to: target, err: reason }, `cannot read ${this.kind} record; moved it aside`);
    } catch (err) {
      log.error({ file, err: reason, rename_err: errorMessage(err) }, `cannot read ${this.kind} record and cannot move it aside; skipping it`);
    }
  }

  private file(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }
}

/** Throws unless `record` is an object whose `id` is `id`, the name of its file. */
function checkRecord(record: unknown, id: string): void {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    let found: string = typeof record;
    if (record === null) found = 'null';
    if (Array.isArray(record)) found = 'an array';
    throw new Error(`the file contains ${found}, not a JSON object`);
  }
  const recordId = (record as { id?: unknown }).id;
  if (recordId !== id) throw new Error(`the record's id ${JSON.stringify(recordId)} does not match its file name (${id}.json)`);
}
