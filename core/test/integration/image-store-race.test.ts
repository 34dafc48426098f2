import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { execa } from 'execa';
import { pino } from 'pino';
import { stringify } from 'smol-toml';
import { ConfigSchema, defaultConfig } from '../../src/config/load.js';
import type { BerthConfig } from '../../src/config/types.js';
import { DefaultImageStore } from '../../src/image/default-store.js';
import { hex } from '../../src/image/layer-store.js';
import { BerthError } from '../../src/errors.js';
import { buildImage, type BuiltImage } from '../support/images.js';
import { pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

const log = pino({ level: 'silent' });
const ITERATIONS = 24;

/** Returns the outcome of a store call: `ok`, or the kind of the BerthError it raised. */
async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return 'ok';
  } catch (err) {
    if (err instanceof BerthError) return err.kind;
    throw err;
  }
}

/** Waits `turns` turns of the event loop, so that calls started together interleave differently. */
async function yieldTurns(turns: number): Promise<void> {
  for (let turn = 0; turn < turns; turn++) await nextTurn();
}

describe('image store under concurrent rootfs and image removal', () => {
  let registry: TestRegistry;
  let dir: string;
  let config: BerthConfig;
  let store: DefaultImageStore;
  let image: BuiltImage;
  let reference: string;
  const containers = new Set<string>();

  before(async () => {
    registry = await startRegistry();
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-store-race-'));
    const registriesConf = path.join(dir, 'registries.conf');
    await writeFile(registriesConf, stringify({ registry: [{ prefix: registry.host, location: registry.host, insecure: true }] }));

    config = defaultConfig(await ConfigSchema.load());
    config.root = path.join(dir, 'root');
    config.image = { ...config.image, registries_conf: registriesConf, registries_conf_dir: path.join(dir, 'none'), certs_dir: path.join(dir, 'certs'), auth_file: '' };
    store = await DefaultImageStore.open(config, log);

    // Several small layers, so that garbage collection has several deletions to interleave with.
    image = await buildImage({
      layers: [0, 1, 2, 3].map((index) => ({
        entries: [
          { name: 'data/', type: 'directory' as const },
          { name: `data/layer-${index}`, content: `layer ${index}\n` },
        ],
      })),
    });
    await pushImage(registry, 'race/layers', image, 'v1');
    reference = `${registry.host}/race/layers:v1`;
  });

  after(async () => {
    for (const id of containers) await store?.removeRootfs(id, log).catch(() => undefined);
    await store?.close();
    await registry?.stop();
    if (dir) {
      await unmountUnder(dir);
      await rm(dir, { recursive: true, force: true });
    }
  });

  async function mountsUnderStore(): Promise<string[]> {
    const text = await readFile('/proc/self/mountinfo', 'utf8');
    return text
      .split('\n')
      .map((line) => line.split(' ')[4] ?? '')
      .filter((mountPoint) => mountPoint.startsWith(`${config.root}/`));
  }

  async function unmountUnder(root: string): Promise<void> {
    const text = await readFile('/proc/self/mountinfo', 'utf8');
    const targets = text
      .split('\n')
      .map((line) => line.split(' ')[4] ?? '')
      .filter((mountPoint) => mountPoint.startsWith(`${root}/`));
    for (const target of targets.reverse()) await execa('umount', ['-l', target]).catch(() => undefined);
  }

  /** Checks that every stored image has its layers on disk and that nothing is left in tmp/. */
  async function assertStoreConsistent(context: string): Promise<void> {
    const imagesDir = path.join(config.root, 'images');
    const layerDirs = new Set(await readdir(path.join(imagesDir, 'layers')));
    for (const record of await store.list()) {
      for (const chainId of record.chainIds) assert.ok(layerDirs.has(hex(chainId)), `${context}: image ${record.id} lost layer ${chainId}`);
    }
    assert.deepEqual(await readdir(path.join(imagesDir, 'tmp')), [], `${context}: tmp/ is not empty`);
  }

  test('rootfs creation races image removal', async () => {
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      const imageId = (await store.pull(reference, { log })).id;
      const containerId = `race-create-${iteration}`;
      containers.add(containerId);

      // One call starts, the other a few event-loop turns later, so the image lookup falls at a
      // different point of the removal in each iteration. Odd iterations start the creation first.
      let removal: Promise<string>;
      let creation: Promise<string>;
      if (iteration % 2 === 0) {
        removal = outcome(store.remove(reference, log));
        await yieldTurns(iteration % 6);
        creation = outcome(store.createRootfs(containerId, imageId, log));
      } else {
        creation = outcome(store.createRootfs(containerId, imageId, log));
        await yieldTurns(iteration % 6);
        removal = outcome(store.remove(reference, log));
      }
      const [removed, created] = await Promise.all([removal, creation]);

      const context = `iteration ${iteration}: remove ${removed}, create ${created}`;
      assert.ok(
        (removed === 'ok' && created === 'NotFound') || (removed === 'FailedPrecondition' && created === 'ok'),
        `${context}: expected one of the two calls to win cleanly`,
      );
      if (created === 'ok') {
        assert.ok((await mountsUnderStore()).some((mountPoint) => mountPoint.includes(containerId)), `${context}: rootfs is not mounted`);
        assert.ok(await store.get(imageId), `${context}: the image of a live rootfs was removed`);
      }
      await assertStoreConsistent(context);

      await store.removeRootfs(containerId, log);
      containers.delete(containerId);
    }

    await store.remove(reference, log).catch(() => undefined);
    assert.deepEqual(await store.list(), []);
    assert.deepEqual(await readdir(path.join(config.root, 'images', 'layers')), [], 'layers left after the last image was removed');
    assert.deepEqual(await mountsUnderStore(), [], 'mounts left after every rootfs was removed');
  });

  test('rootfs mount races rootfs removal', async () => {
    const imageId = (await store.pull(reference, { log })).id;
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      const containerId = `race-mount-${iteration}`;
      containers.add(containerId);
      const rootfs = await store.createRootfs(containerId, imageId, log);
      // A stopped container's rootfs may be unmounted (after a reboot, say); StartContainer
      // mounts it again while RemoveContainer may be deleting it.
      await execa('umount', [rootfs.path]);

      const removal = outcome(store.removeRootfs(containerId, log));
      await yieldTurns(iteration % 6);
      const mount = outcome(store.mountRootfs(containerId, log));
      const [removed, mounted] = await Promise.all([removal, mount]);

      const context = `iteration ${iteration}: remove ${removed}, mount ${mounted}`;
      assert.equal(removed, 'ok', context);
      assert.ok(mounted === 'ok' || mounted === 'NotFound', context);
      assert.deepEqual(await mountsUnderStore(), [], `${context}: a mount outlived its rootfs`);
      assert.deepEqual(await readdir(path.join(config.root, 'images', 'containers')), [], `${context}: rootfs directory left`);
      await assertStoreConsistent(context);
      containers.delete(containerId);
    }
  });

  test('pull races image removal', async () => {
    for (let iteration = 0; iteration < ITERATIONS; iteration++) {
      await store.pull(reference, { log });
      const removal = outcome(store.remove(reference, log));
      await yieldTurns(iteration % 6);
      const pull = outcome(store.pull(reference, { log }));
      const [removed, pulled] = await Promise.all([removal, pull]);

      const context = `iteration ${iteration}: remove ${removed}, pull ${pulled}`;
      assert.equal(removed, 'ok', context);
      assert.equal(pulled, 'ok', context);
      await assertStoreConsistent(context);
    }
  });
});
