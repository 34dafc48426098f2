import type { Logger } from '../log.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { RecordStore } from './record-store.js';

/**
 * Objects of one kind (sandboxes or containers) in memory, each persisted as a JSON record
 * before the in-memory copy changes, so that what a client saw survives a crash. Writes of one
 * id (save, update, remove) run one at a time, so an update that started before a remove can
 * never write the removed record back.
 */
export class ObjectStore<T extends { id: string }> {
  private readonly items = new Map<string, T>();
  private readonly records: RecordStore<T>;
  private readonly writes = new KeyedMutex();

  constructor(dir: string, kind: string) {
    this.records = new RecordStore<T>(dir, kind);
  }

  /** Creates the directory and loads every persisted record; unreadable records are moved aside. */
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

  /** Persists `record` atomically, then makes it the in-memory copy; creates the record if it is new. */
  async save(record: T): Promise<void> {
    await this.writes.run(record.id, async () => {
      await this.records.put(record);
      this.items.set(record.id, record);
    });
  }

  /**
   * Replaces the record `id` with `change(current)` and persists it, only while the record
   * exists. `change` receives the latest copy and returns `current` itself to leave it as it is.
   * Returns the record as stored afterwards, or undefined when it was removed, in which case
   * nothing is written.
   */
  async update(id: string, change: (current: T) => T): Promise<T | undefined> {
    return this.writes.run(id, async () => {
      const current = this.items.get(id);
      if (!current) return undefined;
      const next = change(current);
      if (next === current) return current;
      if (next.id !== id) throw new Error(`record update changed the id from ${id} to ${next.id}`);

      await this.records.put(next);
      this.items.set(id, next);
      return next;
    });
  }

  /** Deletes the persisted record and the in-memory copy; idempotent. */
  async remove(id: string): Promise<void> {
    await this.writes.run(id, async () => {
      await this.records.delete(id);
      this.items.delete(id);
    });
  }
}
