import type { Logger } from '../log.js';
import { RecordStore } from './record-store.js';

/**
 * Objects of one kind (sandboxes or containers) in memory, each persisted as a JSON record
 * before the in-memory copy changes, so that what a client saw survives a crash.
 */
export class ObjectStore<T extends { id: string }> {
  private readonly items = new Map<string, T>();
  private readonly records: RecordStore<T>;

  constructor(dir: string, kind: string) {
    this.records = new RecordStore<T>(dir, kind);
  }

  /** Creates the directory and loads every persisted record. */
  async load(log: Logger): Promise<T[]> {
    await this.records.init();
    const loaded = await this.records.loadAll(log);
    for (const record of loaded) this.items.set(record.id, record);
    return loaded;
  }

  get(id: string): T | undefined {
    return this.items.get(id);
  }

  list(): T[] {
    return [...this.items.values()];
  }

  /** Persists `record` atomically, then makes it the in-memory copy. */
  async save(record: T): Promise<void> {
    await this.records.put(record);
    this.items.set(record.id, record);
  }

  /** Deletes the persisted record and the in-memory copy; idempotent. */
  async remove(id: string): Promise<void> {
    await this.records.delete(id);
    this.items.delete(id);
  }
}
