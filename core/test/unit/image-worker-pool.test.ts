import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { WorkerPool } from '../../src/image/worker-pool.js';

/** A path that exists nowhere, so a syncfs request for it fails with ENOENT after a round trip to a worker. */
const MISSING = '/nonexistent-berth-worker-pool-test/mnt';

let nextJob = 0;

/** Returns a layer job whose target directory does not exist, unique per call. */
function layerJob(): { targetDir: string; compression: 'gzip'; digest: string; size: number } {
  nextJob++;
  return { targetDir: `/nonexistent-berth-worker-pool-test/job-${nextJob}`, compression: 'gzip', digest: `sha256:${'0'.repeat(64)}`, size: 1 };
}

/** PIDs of this process's image worker children. */
async function workerPids(): Promise<number[]> {
  const pids: number[] = [];
  for (const task of await readdir('/proc/self/task')) {
    const children = await readFile(`/proc/self/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.trim().split(/\s+/).filter(Boolean)) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes('extract-worker.js')) pids.push(Number(child));
    }
  }
  return pids;
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `${what} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/**
 * Sends one request to a worker through a layer download handle, then releases the handle.
 * Returns the errno code the worker reported.
 */
async function roundTrip(pool: WorkerPool): Promise<string | undefined> {
  const download = pool.startLayer(layerJob());
  try {
    await download.sync(MISSING);
    return 'no error';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  } finally {
    await download.abort();
  }
}

describe('image worker pool', () => {
  const log = createLogger('silent');
  let pool: WorkerPool | undefined;

  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  test('starts no worker up front', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    assert.equal(pool.workerCount, 0);
    assert.deepEqual(await workerPids(), []);
  });

  test('starts a worker on demand', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    assert.equal(await roundTrip(pool), 'ENOENT');
    assert.equal(pool.workerCount, 1);
    assert.equal((await workerPids()).length, 1);

    // Calls reuse the worker while it is there.
    assert.equal(await roundTrip(pool), 'ENOENT');
    assert.equal(pool.workerCount, 1);
  });

  test('stops an idle worker, then starts anew', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 100 }, log);
    assert.equal(await roundTrip(pool), 'ENOENT');
    const [first] = await workerPids();
    assert.ok(first !== undefined, 'a worker process runs after the first request');

    await waitFor(() => pool!.workerCount === 0, 'the idle worker is stopped');
    await waitFor(async () => (await workerPids()).length === 0, 'the idle worker process exits');

    assert.equal(await roundTrip(pool), 'ENOENT');
    const [second] = await workerPids();
    assert.ok(second !== undefined, 'a new worker process runs after the next request');
    assert.notEqual(second, first);
  });

  test('keeps idle workers with idleMs 0', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    assert.equal(await roundTrip(pool), 'ENOENT');
    const before = await workerPids();
    await sleep(300);
    assert.deepEqual(await workerPids(), before);
    assert.equal(pool.workerCount, 1);
  });

  test('requests at the idle deadline all settle', async () => {
    // Each request lands at a random point around the moment the worker's idle time runs out, so
    // some reach the pool just before it retires the worker and some just after.
    pool = new WorkerPool({ size: 2, idleMs: 15 }, log);
    for (let round = 0; round < 40; round++) {
      await sleep(Math.random() * 30);
      assert.equal(await roundTrip(pool), 'ENOENT', `round ${round}`);
    }
  });

  test('worker killed mid-request fails it', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    assert.equal(await roundTrip(pool), 'ENOENT');
    const [pid] = await workerPids();
    assert.ok(pid !== undefined);

    const request = roundTrip(pool);
    process.kill(pid, 'SIGKILL');
    const outcome = await Promise.race([request, sleep(10_000, 'still pending after 10 s')]);
    // The worker may still have served the request before the signal arrived.
    assert.ok(outcome === 'ENOENT' || /image worker process exited|EPIPE|ECONNRESET|ERR_IPC_CHANNEL_CLOSED/.test(outcome ?? ''), outcome);
    await waitFor(() => pool!.workerCount === 0, 'the killed worker leaves the pool');

    assert.equal(await roundTrip(pool), 'ENOENT');
    assert.equal(pool.workerCount, 1);
  });

  test('layer download keeps its worker busy', async () => {
    pool = new WorkerPool({ size: 1, idleMs: 50 }, log);
    const download = pool.startLayer({ targetDir: '/nonexistent-berth-worker-pool-test/diff', compression: 'gzip', digest: `sha256:${'0'.repeat(64)}`, size: 1 });
    await sleep(200);
    assert.equal(pool.workerCount, 1, 'a worker with a bound layer download is not idle');

    await download.abort();
    await waitFor(() => pool!.workerCount === 0, 'the worker is stopped once the download is aborted');
  });

  test('second download starts a second worker', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    const job = (name: string) => ({ targetDir: `/nonexistent-berth-worker-pool-test/${name}`, compression: 'gzip' as const, digest: `sha256:${'0'.repeat(64)}`, size: 1 });
    const downloads = [pool.startLayer(job('a')), pool.startLayer(job('b')), pool.startLayer(job('c'))];
    assert.equal(pool.workerCount, 2, 'at most size workers');
    for (const download of downloads) await download.abort();
  });

  test('close ends workers and rejects requests', async () => {
    pool = new WorkerPool({ size: 2, idleMs: 0 }, log);
    assert.equal(await roundTrip(pool), 'ENOENT');
    const pids = await workerPids();
    assert.equal(pids.length, 1);
    const openDownload = pool.startLayer(layerJob());

    await pool.close();
    assert.equal(pool.workerCount, 0);
    assert.deepEqual(await workerPids(), []);
    await assert.rejects(openDownload.sync(MISSING), UnavailableError);
    assert.throws(() => pool!.startLayer({ targetDir: '/nonexistent-berth-worker-pool-test/diff', compression: 'gzip', digest: `sha256:${'0'.repeat(64)}`, size: 1 }), UnavailableError);
  });

  test('invalid options are rejected', () => {
    assert.throws(() => new WorkerPool({ size: 0, idleMs: 0 }, log), /pool size must be a positive integer, not 0/);
    assert.throws(() => new WorkerPool({ size: 2, idleMs: -1 }, log), /idle time must be 0 or more milliseconds, not -1/);
  });
});
