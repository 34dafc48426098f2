import { after, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import fsPromises, { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { createLogger } from '../../src/log.js';
import { ObjectStore } from '../../src/state/object-store.js';
import { writeJsonAtomic } from '../../src/state/json-file.js';

interface Item {
  id: string;
  count: number;
}

/** Creates a logger that keeps its JSON lines, parsed by `lines()`. */
function capturingLogger(): { log: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[] } {
  const stream = new PassThrough();
  const chunks: string[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  const log = createLogger('debug', stream);
  const lines = (): Record<string, unknown>[] =>
    chunks
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { log, lines };
}

describe('ObjectStore', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-object-store-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function openStore(name: string): Promise<{ store: ObjectStore<Item>; storeDir: string }> {
    const storeDir = path.join(dir, name);
    const store = new ObjectStore<Item>(storeDir, 'test item');
    await store.load(capturingLogger().log);
    return { store, storeDir };
  }

  it('update after remove writes nothing', async () => {
    const { store, storeDir } = await openStore('after-remove');
    await store.save({ id: 'a', count: 0 });
    await store.remove('a');

    let called = false;
    const result = await store.update('a', (current) => {
      called = true;
      return { ...current, count: 1 };
    });
    assert.equal(result, undefined);
    assert.equal(called, false);
    assert.equal(store.get('a'), undefined);
    assert.deepEqual(await readdir(storeDir), []);
  });

  it('remove during update never resurrects', async () => {
    const { store, storeDir } = await openStore('race');
    for (let round = 0; round < 200; round++) {
      const id = `item${round}`;
      await store.save({ id, count: 0 });

      // Even rounds let the update reach its file write before the remove starts; odd rounds start both at once.
      const update = store.update(id, (current) => ({ ...current, count: current.count + 1 }));
      if (round % 2 === 0) await nextTurn();
      const removal = store.remove(id);
      await Promise.all([update, removal]);

      assert.equal(store.get(id), undefined, `round ${round}: in memory`);
      assert.ok(!store.list().some((item) => item.id === id), `round ${round}: listed`);
    }
    assert.deepEqual(await readdir(storeDir), []);

    const reloaded = new ObjectStore<Item>(storeDir, 'test item');
    assert.deepEqual(await reloaded.load(capturingLogger().log), []);
  });

  it('update applies to the latest copy', async () => {
    const { store } = await openStore('latest');
    await store.save({ id: 'a', count: 0 });
    await Promise.all(Array.from({ length: 20 }, () => store.update('a', (current) => ({ ...current, count: current.count + 1 }))));
    assert.equal(store.get('a')?.count, 20);
  });

  it('update returning the current copy writes nothing', async () => {
    const { store, storeDir } = await openStore('unchanged');
    await store.save({ id: 'a', count: 0 });
    await writeFile(path.join(storeDir, 'a.json'), JSON.stringify({ id: 'a', count: 5 }));

    const result = await store.update('a', (current) => current);
    assert.equal(result?.count, 0);
    assert.equal(JSON.parse(await readFile(path.join(storeDir, 'a.json'), 'utf8')).count, 5);
  });

  it('corrupt records are moved aside', async () => {
    const storeDir = path.join(dir, 'corrupt');
    const { store: writer } = await openStore('corrupt');
    await writer.save({ id: 'good', count: 1 });
    await writeFile(path.join(storeDir, 'truncated.json'), '{"id": ');
    await writeFile(path.join(storeDir, 'array.json'), '[]');
    await writeFile(path.join(storeDir, 'renamed.json'), JSON.stringify({ id: 'other', count: 2 }));

    const { log, lines } = capturingLogger();
    const store = new ObjectStore<Item>(storeDir, 'test item');
    const loaded = await store.load(log);

    assert.deepEqual(loaded, [{ id: 'good', count: 1 }]);
    assert.deepEqual((await readdir(storeDir)).sort(), ['array.json.corrupt', 'good.json', 'renamed.json.corrupt', 'truncated.json.corrupt']);
    const errors = lines().filter((line) => line.level === 'error');
    for (const name of ['truncated.json', 'array.json', 'renamed.json']) {
      const line = errors.find((entry) => entry.file === path.join(storeDir, name));
      assert.ok(line, `no error logged for ${name}`);
      assert.equal(line.moved_to, path.join(storeDir, `${name}.corrupt`));
      assert.match(String(line.msg), /cannot read test item record; moved it aside/);
    }

    // A second start leaves the moved files alone.
    assert.deepEqual(await new ObjectStore<Item>(storeDir, 'test item').load(capturingLogger().log), [{ id: 'good', count: 1 }]);
  });
});

describe('writeJsonAtomic', () => {
  it('flushes the directory after the rename', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-json-file-'));
    const file = path.join(dir, 'record.json');
    const events: string[] = [];

    // Record every open and every fsync through fs/promises, which json-file.ts imports from.
    const realOpen = fsPromises.open;
    const realRename = fsPromises.rename;
    mock.method(fsPromises, 'open', async (target: string, ...rest: unknown[]) => {
      const handle = await (realOpen as (...args: unknown[]) => Promise<fsPromises.FileHandle>)(target, ...rest);
      const realSync = handle.sync.bind(handle);
      handle.sync = async () => {
        events.push(`sync ${target === dir ? 'directory' : 'file'}`);
        return realSync();
      };
      return handle;
    });
    mock.method(fsPromises, 'rename', async (from: string, to: string) => {
      events.push('rename');
      return realRename(from, to);
    });
    syncBuiltinESMExports();

    try {
      await writeJsonAtomic(file, { id: 'x' });
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }

    assert.deepEqual(events, ['sync file', 'rename', 'sync directory']);
    assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { id: 'x' });
    await rm(dir, { recursive: true, force: true });
  });
});
