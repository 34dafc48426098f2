import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyedRwLock } from '../../src/util/keyed-rw-lock.js';

describe('KeyedRwLock', () => {
  const task = (events: string[], name: string, ms: number) => async (): Promise<void> => {
    events.push(`start ${name}`);
    await sleep(ms);
    events.push(`end ${name}`);
  };

  it('overlaps shared holders', async () => {
    const lock = new KeyedRwLock();
    const events: string[] = [];
    await Promise.all([lock.shared('a', task(events, 'r1', 20)), lock.shared('a', task(events, 'r2', 1))]);
    assert.deepEqual(events, ['start r1', 'start r2', 'end r2', 'end r1']);
  });

  it('exclusive waits for shared holders', async () => {
    const lock = new KeyedRwLock();
    const events: string[] = [];
    await Promise.all([lock.shared('a', task(events, 'r1', 20)), lock.exclusive('a', task(events, 'w', 1)), lock.shared('a', task(events, 'r2', 1))]);
    // r2 arrived after w, so it waits for w rather than overtaking it.
    assert.deepEqual(events, ['start r1', 'end r1', 'start w', 'end w', 'start r2', 'end r2']);
  });

  it('exclusive holders run one at a time', async () => {
    const lock = new KeyedRwLock();
    const events: string[] = [];
    await Promise.all([lock.exclusive('a', task(events, 'w1', 10)), lock.exclusive('a', task(events, 'w2', 1))]);
    assert.deepEqual(events, ['start w1', 'end w1', 'start w2', 'end w2']);
  });

  it('keeps keys independent', async () => {
    const lock = new KeyedRwLock();
    const events: string[] = [];
    await Promise.all([lock.exclusive('a', task(events, 'a', 20)), lock.exclusive('b', task(events, 'b', 1)), lock.shared('c', task(events, 'c', 1))]);
    assert.deepEqual(events, ['start a', 'start b', 'start c', 'end b', 'end c', 'end a']);
  });

  it('releases the key when an operation throws', async () => {
    const lock = new KeyedRwLock();
    await assert.rejects(lock.exclusive('a', async () => Promise.reject(new Error('boom'))), /boom/);
    await assert.rejects(lock.shared('a', async () => Promise.reject(new Error('boom'))), /boom/);
    assert.equal(await lock.exclusive('a', async () => 'next'), 'next');
  });
});
