import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedMutex } from '../../src/util/keyed-mutex.js';

describe('KeyedMutex', () => {
  it('serialises one key and overlaps others', async () => {
    const lock = new KeyedMutex();
    const events: string[] = [];
    const task = (name: string, ms: number) => async () => {
      events.push(`start ${name}`);
      await new Promise((resolve) => setTimeout(resolve, ms));
      events.push(`end ${name}`);
    };

    await Promise.all([lock.run('a', task('a1', 30)), lock.run('a', task('a2', 1)), lock.run('b', task('b1', 1))]);
    assert.deepEqual(events, ['start a1', 'start b1', 'end b1', 'end a1', 'start a2', 'end a2']);
  });

  it('releases the key when a task throws', async () => {
    const lock = new KeyedMutex();
    await assert.rejects(lock.run('a', async () => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await lock.run('a', async () => 'next'), 'next');
  });
});
