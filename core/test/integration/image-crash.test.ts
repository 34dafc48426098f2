import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { insecureRegistries, startImageDaemon } from '../support/image-daemon.js';
import { randomImage, type BuiltImage } from '../support/images.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { CountingProxy, pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

/** PIDs of the daemon's child processes: its image workers (the stub runtime starts none). */
async function childPids(daemon: TestDaemon): Promise<number[]> {
  const pid = daemon.process.pid!;
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the store has a layer download in tmp/. */
async function waitForDownload(storeDir: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await readdir(path.join(storeDir, 'tmp'))).length < 1) {
    assert.ok(Date.now() < deadline, 'no layer download started within 30 s');
    await sleep(20);
  }
}

describe('image pull after a daemon crash', () => {
  let registry: TestRegistry;
  let proxy: CountingProxy;
  let image: BuiltImage;
  let dir: string;
  let daemon: TestDaemon | undefined;

  before(async () => {
    registry = await startRegistry();
    // 2 MiB per second: the 4 layers of 1 MiB take about 2 s, long enough to kill the daemon mid-pull.
    proxy = await CountingProxy.start(registry.host, { bytesPerSecond: 2 * 1024 * 1024 });
    image = await randomImage(4, 1024 * 1024, 11);
    await pushImage(registry, 'test/crash', image, 'v1');
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-crash-'));
  });

  after(async () => {
    await daemon?.kill();
    await proxy?.close();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('kill -9 mid-pull, then pull succeeds', async () => {
    const options = { dir, registries: insecureRegistries([proxy.host]), image: { max_concurrent_downloads: 1 } };
    daemon = await startImageDaemon(options);
    assert.deepEqual(await childPids(daemon), [], 'image workers start on demand');
    const pull = daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/crash:v1` } });
    pull.catch(() => undefined);

    // Wait until the first layer is stored and the second is downloading.
    const storeDir = path.join(dir, 'root', 'images');
    const deadline = Date.now() + 30_000;
    while ((await readdir(path.join(storeDir, 'layers'))).length < 1) {
      assert.ok(Date.now() < deadline, 'no layer was stored within 30 s');
      await sleep(20);
    }
    const workers = await childPids(daemon);
    assert.ok(workers.length >= 1, 'the pull runs in image worker processes');
    await daemon.kill();
    for (const pid of workers) {
      while (isRunning(pid)) {
        assert.ok(Date.now() < deadline, `image worker ${pid} outlived the killed daemon`);
        await sleep(20);
      }
    }
    assert.ok((await readdir(path.join(storeDir, 'tmp'))).length > 0, 'expected an interrupted download in tmp/');
    assert.deepEqual(await readdir(path.join(storeDir, 'images')), []);

    daemon = await startImageDaemon(options);
    assert.deepEqual(await readdir(path.join(storeDir, 'tmp')), []);
    assert.deepEqual(await readdir(path.join(storeDir, 'layers')), [], 'the layer of the interrupted pull is unreferenced and deleted');
    assert.deepEqual(await readdir(path.join(storeDir, 'l')), []);

    const response = await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/crash:v1` } });
    assert.equal(response.image_ref, image.configDigest);
    assert.equal((await readdir(path.join(storeDir, 'layers'))).length, 4);
    assert.equal((await readdir(path.join(storeDir, 'l'))).length, 4);

    const logged = daemon.logRecords().filter((record) => record.msg === 'removed temporary file left by an interrupted operation');
    assert.ok(logged.length > 0, 'start-up logs the clean-up');
  });

  test('killed worker fails the pull cleanly', async () => {
    const storeDir = path.join(dir, 'root', 'images');
    const reference = `${proxy.host}/test/crash:v1`;
    await daemon!.client.image.RemoveImage({ image: { image: reference } });
    const pull = daemon!.client.image.PullImage({ image: { image: reference } });
    pull.catch(() => undefined);

    await waitForDownload(storeDir);
    const workers = await childPids(daemon!);
    assert.ok(workers.length >= 1, 'the pull runs in image worker processes');
    for (const pid of workers) process.kill(pid, 'SIGKILL');
    const err = await expectGrpcError(pull);
    assert.equal(err.code, grpc.status.INTERNAL);
    assert.match(err.details, /image worker process exited/);
    assert.deepEqual(await readdir(path.join(storeDir, 'tmp')), []);
    assert.deepEqual(await readdir(path.join(storeDir, 'layers')), []);

    // The layers after the failed one still run, on workers started for them.
    const remaining = await childPids(daemon!);
    assert.ok(remaining.every((pid) => !workers.includes(pid)), `killed workers ${workers.join(', ')} are gone, running: ${remaining.join(', ')}`);
    const response = await daemon!.client.image.PullImage({ image: { image: reference } });
    assert.equal(response.image_ref, image.configDigest);
    const started = daemon!.logRecords().filter((record) => record.msg === 'image worker process started');
    assert.ok(started.some((record) => !workers.includes(record.pid as number)), 'the pool started new workers');
  });

  test('store survives a restart intact', async () => {
    await daemon!.stop();
    daemon = await startImageDaemon({ dir, registries: insecureRegistries([proxy.host]) });
    const status = await daemon.client.image.ImageStatus({ image: { image: `${proxy.host}/test/crash:v1` } });
    assert.equal(status.image?.id, image.configDigest);
    await daemon.cleanup();
    daemon = undefined;
  });
});
