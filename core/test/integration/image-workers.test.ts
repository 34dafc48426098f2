import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { insecureRegistries, startImageDaemon } from '../support/image-daemon.js';
import { randomImage, type BuiltImage } from '../support/images.js';
import { pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

/** PIDs of the daemon's image worker processes: its children running extract-worker.js. */
async function workerPids(daemon: TestDaemon): Promise<number[]> {
  const pid = daemon.process.pid!;
  const pids: number[] = [];
  for (const task of await readdir(`/proc/${pid}/task`)) {
    const children = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.trim().split(/\s+/).filter(Boolean)) {
      const cmdline = await readFile(`/proc/${child}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes('extract-worker.js')) pids.push(Number(child));
    }
  }
  return pids;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PIDs from the daemon's "image worker process started" log records. */
function startedWorkers(daemon: TestDaemon): number[] {
  return daemon.logRecords()
    .filter((record) => record.msg === 'image worker process started')
    .map((record) => record.pid as number);
}

describe('image workers on demand', () => {
  let registry: TestRegistry;
  let image: BuiltImage;
  let daemon: TestDaemon | undefined;
  let reference: string;

  before(async () => {
    registry = await startRegistry();
    image = await randomImage(3, 256 * 1024, 21);
    await pushImage(registry, 'test/workers', image, 'v1');
    reference = `${registry.host}/test/workers:v1`;
    daemon = await startImageDaemon({ registries: insecureRegistries([registry.host]), image: { worker_idle_seconds: 1 } });
  });

  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
  });

  test('no worker before the first pull', async () => {
    assert.deepEqual(await workerPids(daemon!), []);
    assert.deepEqual(startedWorkers(daemon!), []);
  });

  test('pull starts workers, idle ones exit', async () => {
    const response = await daemon!.client.image.PullImage({ image: { image: reference } });
    assert.equal(response.image_ref, image.configDigest);
    const started = startedWorkers(daemon!);
    assert.ok(started.length >= 1, 'the pull started a worker');

    const deadline = Date.now() + 15_000;
    while ((await workerPids(daemon!)).length > 0) {
      assert.ok(Date.now() < deadline, 'idle workers still run 15 s after the pull, with worker_idle_seconds = 1');
      await sleep(100);
    }
    for (const pid of started) assert.ok(!isRunning(pid), `worker ${pid} exited`);
    const exited = daemon!.logRecords().filter((record) => record.msg === 'idle image worker process exited');
    assert.equal(exited.length, started.length);
    assert.equal(daemon!.logRecords().filter((record) => record.msg === 'image worker process exited; the next request that needs one starts a new one').length, 0);
  });

  test('pull after idle exit works', async () => {
    const before = startedWorkers(daemon!);
    await daemon!.client.image.RemoveImage({ image: { image: reference } });
    const response = await daemon!.client.image.PullImage({ image: { image: reference } });
    assert.equal(response.image_ref, image.configDigest);
    const started = startedWorkers(daemon!).filter((pid) => !before.includes(pid));
    assert.ok(started.length >= 1, 'the second pull started a new worker');
  });
});

describe('image workers kept', () => {
  let registry: TestRegistry;
  let daemon: TestDaemon | undefined;

  before(async () => {
    registry = await startRegistry();
    await pushImage(registry, 'test/workers', await randomImage(1, 64 * 1024, 22), 'v1');
    daemon = await startImageDaemon({ registries: insecureRegistries([registry.host]), image: { worker_idle_seconds: 0 } });
  });

  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
  });

  test('worker_idle_seconds 0 keeps workers', async () => {
    await daemon!.client.image.PullImage({ image: { image: `${registry.host}/test/workers:v1` } });
    const workers = await workerPids(daemon!);
    assert.ok(workers.length >= 1, 'the pull started a worker');
    await sleep(2000);
    assert.deepEqual(await workerPids(daemon!), workers);
  });

  test('daemon stop ends workers', async () => {
    const workers = await workerPids(daemon!);
    assert.ok(workers.length >= 1, 'workers run before the stop');
    assert.equal(await daemon!.stop(), 0);
    for (const pid of workers) assert.ok(!isRunning(pid), `worker ${pid} exited with the daemon`);
  });
});
