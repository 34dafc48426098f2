import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir } from 'node:fs/promises';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import type { TestDaemon } from '../support/daemon.js';
import { insecureRegistries, startImageDaemon } from '../support/image-daemon.js';
import {
  buildImage,
  buildIndex,
  busyboxImage,
  foreignOnlyIndex,
  hostArchitecture,
  multiPlatformIndex,
  randomImage,
  userImage,
  whiteoutImage,
  zstdImage,
  type BuiltImage,
  type BuiltIndex,
  type TarEntry,
} from '../support/images.js';
import { CountingProxy, freePort, pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

describe('image pull through the CRI socket', () => {
  let registry: TestRegistry;
  let daemon: TestDaemon;
  let base: BuiltImage;
  let user: BuiltImage;
  let numericUser: BuiltImage;
  let multi: BuiltIndex;
  let zstd: BuiltImage;
  let docker: BuiltImage;
  let digestNamed: BuiltImage;

  before(async () => {
    registry = await startRegistry();
    base = await busyboxImage();
    user = await userImage();
    numericUser = await userImage('1000:1000');
    multi = await multiPlatformIndex();
    zstd = await zstdImage();
    docker = await busyboxImage({ docker: true, config: { Cmd: ['echo', 'docker'] } });
    await pushImage(registry, 'library/busybox', base, 'latest');
    await pushImage(registry, 'library/busybox', base, '1.35');
    await pushImage(registry, 'test/user', user, 'v1');
    await pushImage(registry, 'test/numeric-user', numericUser, 'v1');
    await pushImage(registry, 'test/multi', multi, 'v1');
    await pushImage(registry, 'test/foreign', await foreignOnlyIndex(), 'v1');
    await pushImage(registry, 'test/zstd', zstd, 'v1');
    await pushImage(registry, 'test/docker', docker, 'v1');
    await pushImage(registry, 'test/whiteout', await whiteoutImage(), 'v1');
    digestNamed = await busyboxImage({ config: { Cmd: ['echo', 'digest-named'] } });
    await pushImage(registry, 'test/digest-named', digestNamed, 'a');
    await pushImage(registry, 'test/digest-named', digestNamed, 'b');

    daemon = await startImageDaemon({ registries: insecureRegistries([registry.host]) });
  });

  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
  });

  test('plain-HTTP registry not marked insecure', async () => {
    const strict = await startImageDaemon();
    try {
      const err = await expectGrpcError(strict.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } }));
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      assert.match(err.details, new RegExp(`${registry.host} does not speak TLS`));
      assert.match(err.details, /insecure = true/);
      assert.equal(strict.logRecords().filter((record) => record.msg === 'registry request failed; retrying').length, 0, 'no retries');
    } finally {
      await strict.cleanup();
    }
  });

  test('pull by tag returns the config digest', async () => {
    const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } });
    assert.equal(response.image_ref, base.configDigest);
  });

  test('pull by digest records the repo digest', async () => {
    const reference = `${registry.host}/library/busybox@${base.digest}`;
    const response = await daemon.client.image.PullImage({ image: { image: reference } });
    assert.equal(response.image_ref, base.configDigest);

    const status = await daemon.client.image.ImageStatus({ image: { image: reference } });
    assert.equal(status.image?.id, base.configDigest);
    assert.ok(status.image?.repo_digests.includes(reference), `repo_digests: ${status.image?.repo_digests.join(', ')}`);
  });

  test('second tag of one image is listed once', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:1.35` } });
    const list = await daemon.client.image.ListImages({});
    const matches = list.images.filter((image) => image.id === base.configDigest);
    assert.equal(matches.length, 1);
    assert.deepEqual([...matches[0]!.repo_tags].sort(), [`${registry.host}/library/busybox:1.35`, `${registry.host}/library/busybox:latest`]);
  });

  test('ListImages filter keeps the named image', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/zstd:v1` } });
    const filtered = await daemon.client.image.ListImages({ filter: { image: { image: `${registry.host}/test/zstd:v1` } } });
    assert.deepEqual(filtered.images.map((image) => image.id), [zstd.configDigest]);

    const none = await daemon.client.image.ListImages({ filter: { image: { image: `${registry.host}/test/absent:v1` } } });
    assert.equal(none.images.length, 0);

    for (const reference of [zstd.configDigest, `${registry.host}/test/zstd@${zstd.digest}`]) {
      const byReference = await daemon.client.image.ListImages({ filter: { image: { image: reference } } });
      assert.deepEqual(byReference.images.map((image) => image.id), [zstd.configDigest], `filter ${reference}`);
    }
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } });
    const unfiltered = await daemon.client.image.ListImages({ filter: { image: { image: '' } } });
    const unfilteredIds = unfiltered.images.map((image) => image.id);
    assert.ok(unfilteredIds.includes(zstd.configDigest), 'an empty filter image left out the zstd image');
    assert.ok(unfilteredIds.includes(base.configDigest), 'an empty filter image left out the base image');
  });

  test('ImageStatus reports size, tags and pinned', async () => {
    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/zstd:v1` } });
    const image = status.image!;
    assert.equal(image.id, zstd.configDigest);
    assert.deepEqual(image.repo_tags, [`${registry.host}/test/zstd:v1`]);
    assert.equal(image.repo_digests[0], `${registry.host}/test/zstd@${zstd.digest}`);
    assert.ok(Number(image.size) > 1_000_000, `size ${image.size}`);
    assert.equal(image.pinned, false);
    assert.deepEqual(status.info, {});
  });

  test('ImageStatus by image ID and ID prefix', async () => {
    const byId = await daemon.client.image.ImageStatus({ image: { image: zstd.configDigest } });
    assert.equal(byId.image?.id, zstd.configDigest);
    const prefix = zstd.configDigest.slice('sha256:'.length, 'sha256:'.length + 16);
    const byPrefix = await daemon.client.image.ImageStatus({ image: { image: prefix } });
    assert.equal(byPrefix.image?.id, zstd.configDigest);
  });

  test('verbose ImageStatus adds the config JSON', async () => {
    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/zstd:v1` }, verbose: true });
    const info = JSON.parse(status.info.info ?? '{}') as { imageSpec?: { rootfs?: { diff_ids?: string[] }; architecture?: string } };
    assert.deepEqual(info.imageSpec?.rootfs?.diff_ids, zstd.layers.map((layer) => layer.diffId));
    assert.equal(info.imageSpec?.architecture, hostArchitecture());
  });

  test('ImageStatus of an absent image has no image', async () => {
    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/absent:v1` } });
    assert.equal(status.image, null);
  });

  test('User name and uid come from the config', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/user:v1` } });
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/numeric-user:v1` } });

    const named = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/user:v1` } });
    assert.equal(named.image?.username, 'app');
    assert.equal(named.image?.uid, null);

    const numeric = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/numeric-user:v1` } });
    assert.equal(numeric.image?.uid?.value, '1000');
    assert.equal(numeric.image?.username, '');
  });

  test('multi-platform index selects this node', async () => {
    const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/multi:v1` } });
    const native = multi.images.find((image) => JSON.parse(image.config.toString()).architecture === hostArchitecture())!;
    assert.equal(response.image_ref, native.configDigest);

    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/multi:v1` } });
    assert.ok(status.image?.repo_digests.includes(`${registry.host}/test/multi@${multi.digest}`));
    // The platform manifest's own digest finds the image too.
    const byPlatformDigest = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/multi@${multi.digest}` } });
    assert.equal(byPlatformDigest.image?.id, native.configDigest);
  });

  test('index without this platform is NotFound', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${registry.host}/test/foreign:v1` } }));
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.match(err.details, /no manifest for this node's platform linux\//);
    assert.match(err.details, /available: linux\/s390x/);
  });

  test('Docker schema 2 manifest pulls', async () => {
    const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/docker:v1` } });
    assert.equal(response.image_ref, docker.configDigest);
  });

  test('Docker manifest list selects this node', async () => {
    const other = hostArchitecture() === 'arm64' ? 'amd64' : 'arm64';
    const images: BuiltImage[] = [];
    for (const architecture of [other, hostArchitecture()]) {
      images.push(await buildImage({ architecture, docker: true, layers: [{ entries: [{ name: 'platform', content: `${architecture}\n` }] }] }));
    }
    const list = buildIndex(images, true);
    assert.equal(list.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
    await pushImage(registry, 'test/docker-list', list, 'v1');

    const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/docker-list:v1` } });
    assert.equal(response.image_ref, images[1]!.configDigest);
    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/docker-list:v1` } });
    assert.ok(status.image?.repo_digests.includes(`${registry.host}/test/docker-list@${list.digest}`), `repo_digests: ${status.image?.repo_digests.join(', ')}`);
  });

  test('unparseable reference is InvalidArgument', async () => {
    for (const reference of ['UPPER/Case:tag', 'name:tag:extra', 'name@sha256:short', '', `${registry.host}/a//b`]) {
      const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: reference } }));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `reference "${reference}": ${err.details}`);
    }
  });

  test('absent image is NotFound naming registries tried', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${registry.host}/test/absent:v1` } }));
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.match(err.details, new RegExp(`image "${registry.host}/test/absent:v1" not found`));
    assert.match(err.details, new RegExp(`tried ${registry.host}/test/absent`));
  });

  test('absent tag of a present repository is NotFound', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:nope` } }));
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.match(err.details, /manifest "nope" not found/);
  });

  test('short name without search registries is InvalidArgument', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: 'busybox' } }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /names no registry/);
  });

  test('ImageFsInfo grows after a pull', async () => {
    const before = (await daemon.client.image.ImageFsInfo({})).image_filesystems[0]!;
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/whiteout:v1` } });
    const afterPull = (await daemon.client.image.ImageFsInfo({})).image_filesystems[0]!;

    assert.ok(Number(afterPull.used_bytes?.value) > Number(before.used_bytes?.value), `${before.used_bytes?.value} -> ${afterPull.used_bytes?.value}`);
    assert.ok(Number(afterPull.inodes_used?.value) > Number(before.inodes_used?.value));
    assert.ok(afterPull.fs_id?.mountpoint.startsWith('/'));
    assert.ok(BigInt(afterPull.timestamp) >= BigInt(before.timestamp));
  });

  test('remove by tag keeps the other tag', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:1.35` } });
    await daemon.client.image.RemoveImage({ image: { image: `${registry.host}/library/busybox:1.35` } });

    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/library/busybox:latest` } });
    assert.deepEqual(status.image?.repo_tags, [`${registry.host}/library/busybox:latest`]);
    const gone = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/library/busybox:1.35` } });
    assert.equal(gone.image, null);
  });

  test('remove by last tag removes the image', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/docker:v1` } });
    await daemon.client.image.RemoveImage({ image: { image: `${registry.host}/test/docker:v1` } });
    const status = await daemon.client.image.ImageStatus({ image: { image: docker.configDigest } });
    assert.equal(status.image, null);
  });

  test('remove by ID and by digest', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/user:v1` } });
    await daemon.client.image.RemoveImage({ image: { image: user.configDigest } });
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: user.configDigest } })).image, null);

    // Pulled by digest alone, the image has no tag, so its repo digest is its last name.
    await daemon.client.image.RemoveImage({ image: { image: zstd.configDigest } });
    const byDigest = `${registry.host}/test/zstd@${zstd.digest}`;
    await daemon.client.image.PullImage({ image: { image: byDigest } });
    assert.deepEqual((await daemon.client.image.ImageStatus({ image: { image: byDigest } })).image?.repo_tags, []);
    await daemon.client.image.RemoveImage({ image: { image: byDigest } });
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: zstd.configDigest } })).image, null);
  });

  test('remove by digest keeps the tags', async () => {
    const repository = `${registry.host}/test/digest-named`;
    const byDigest = `${repository}@${digestNamed.digest}`;
    await daemon.client.image.PullImage({ image: { image: `${repository}:a` } });
    await daemon.client.image.PullImage({ image: { image: `${repository}:b` } });
    await daemon.client.image.PullImage({ image: { image: byDigest } });
    assert.deepEqual((await daemon.client.image.ImageStatus({ image: { image: byDigest } })).image?.repo_digests, [byDigest]);

    await daemon.client.image.RemoveImage({ image: { image: byDigest } });

    const afterRemoval = await daemon.client.image.ImageStatus({ image: { image: digestNamed.configDigest } });
    assert.equal(afterRemoval.image?.id, digestNamed.configDigest, 'removing the repo digest deleted the tagged image');
    assert.deepEqual([...afterRemoval.image!.repo_tags].sort(), [`${repository}:a`, `${repository}:b`]);
    assert.deepEqual(afterRemoval.image?.repo_digests, []);
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: byDigest } })).image, null, 'the removed digest still resolves');

    await daemon.client.image.RemoveImage({ image: { image: `${repository}:a` } });
    assert.deepEqual((await daemon.client.image.ImageStatus({ image: { image: digestNamed.configDigest } })).image?.repo_tags, [`${repository}:b`]);
    await daemon.client.image.RemoveImage({ image: { image: `${repository}:b` } });
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: digestNamed.configDigest } })).image, null, 'the last tag did not remove the image');
  });

  test('remove of an unknown image succeeds', async () => {
    await daemon.client.image.RemoveImage({ image: { image: `${registry.host}/test/never:v1` } });
    await daemon.client.image.RemoveImage({ image: { image: `sha256:${'0'.repeat(64)}` } });
    const err = await expectGrpcError(daemon.client.image.RemoveImage({ image: { image: '' } }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  });

  test('removal frees ImageFsInfo bytes', async () => {
    await daemon.client.image.PullImage({ image: { image: `${registry.host}/test/zstd:v1` } });
    const before = Number((await daemon.client.image.ImageFsInfo({})).image_filesystems[0]!.used_bytes?.value);
    await daemon.client.image.RemoveImage({ image: { image: `${registry.host}/test/zstd:v1` } });
    const afterRemove = Number((await daemon.client.image.ImageFsInfo({})).image_filesystems[0]!.used_bytes?.value);
    assert.ok(afterRemove < before, `${before} -> ${afterRemove}`);
  });

  test('extraction leaves the server responsive', async () => {
    // Many small files make extraction system-call bound, which would stall the event loop for the
    // whole extraction if it ran there synchronously.
    const files: TarEntry[] = [];
    for (let dir = 0; dir < 100; dir++) {
      files.push({ name: `many/d${dir}/`, type: 'directory' });
      for (let file = 0; file < 150; file++) files.push({ name: `many/d${dir}/f${file}`, content: `${dir}/${file}\n` });
    }
    const image = await buildImage({ layers: [{ entries: files }] });
    await pushImage(registry, 'test/many-files', image, 'v1');

    let pulling = true;
    const pull = daemon.client.image.PullImage({ image: { image: `${registry.host}/test/many-files:v1` } }).finally(() => {
      pulling = false;
    });
    const latencies: number[] = [];
    while (pulling) {
      const started = Date.now();
      await daemon.client.runtime.Version({});
      latencies.push(Date.now() - started);
      await sleep(10);
    }
    assert.equal((await pull).image_ref, image.configDigest);
    assert.ok(latencies.length >= 5, `only ${latencies.length} Version calls ran during the pull`);
    // NOTE: the bound leaves room for a loaded test host, so it catches only a long stall.
    assert.ok(Math.max(...latencies) < 750, `Version took up to ${Math.max(...latencies)} ms during the pull`);
  });

  test('StreamImages sends the list', async () => {
    const images = await new Promise<string[]>((resolve, reject) => {
      const ids: string[] = [];
      const call = daemon.client.rawImage.StreamImages({});
      call.on('data', (message: { images: { id: string }[] }) => ids.push(...message.images.map((image) => image.id)));
      call.on('end', () => resolve(ids));
      call.on('error', reject);
    });
    assert.ok(images.includes(base.configDigest));
  });
});

describe('image pull over TLS', () => {
  let registry: TestRegistry;
  let base: BuiltImage;

  before(async () => {
    registry = await startRegistry({ tls: true });
    base = await busyboxImage();
    await pushImage(registry, 'library/busybox', base, 'latest');
  });

  after(async () => {
    await registry?.stop();
  });

  /** Starts an image daemon whose certs_dir contains the registry's CA when `trustCa` is set. */
  async function tlsDaemon(trustCa: boolean, registries: Record<string, unknown> = { 'unqualified-search-registries': [] }): Promise<TestDaemon> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-test-'));
    if (trustCa) {
      await mkdir(path.join(dir, 'certs.d', registry.host), { recursive: true });
      await copyFile(registry.caFile!, path.join(dir, 'certs.d', registry.host, 'ca.crt'));
    }
    return startImageDaemon({ dir, registries });
  }

  test('CA from certs_dir verifies the registry', async () => {
    const daemon = await tlsDaemon(true);
    try {
      const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } });
      assert.equal(response.image_ref, base.configDigest);
    } finally {
      await daemon.cleanup();
    }
  });

  test('unknown CA fails the pull', async () => {
    const daemon = await tlsDaemon(false);
    try {
      const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } }));
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      assert.match(err.details, new RegExp(`the TLS certificate of ${registry.host.replace('.', '\\.')} was rejected \\(UNABLE_TO_VERIFY_LEAF_SIGNATURE`));
      assert.ok(err.details.includes(path.join(daemon.dir, 'certs.d', registry.host, 'ca.crt')), err.details);
      const retries = daemon.logRecords().filter((record) => record.msg === 'registry request failed; retrying');
      assert.equal(retries.length, 0, 'a rejected certificate was retried');
      const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/library/busybox:latest` } });
      assert.equal(status.image, null);
    } finally {
      await daemon.cleanup();
    }
  });

  test('insecure registry skips verification', async () => {
    const daemon = await tlsDaemon(false, insecureRegistries([registry.host]));
    try {
      const response = await daemon.client.image.PullImage({ image: { image: `${registry.host}/library/busybox:latest` } });
      assert.equal(response.image_ref, base.configDigest);
    } finally {
      await daemon.cleanup();
    }
  });
});

describe('daemon shutdown during a pull', () => {
  let registry: TestRegistry;
  let slowProxy: CountingProxy;

  before(async () => {
    registry = await startRegistry();
    slowProxy = await CountingProxy.start(registry.host, { bytesPerSecond: 512 * 1024 });
  });

  after(async () => {
    await slowProxy?.close();
    await registry?.stop();
  });

  test('SIGTERM lets the pull finish', async () => {
    const image = await randomImage(1, 1024 * 1024, 11);
    await pushImage(registry, 'test/slow', image, 'v1');
    const daemon = await startImageDaemon({ registries: insecureRegistries([slowProxy.host]) });
    try {
      const pull = daemon.client.image.PullImage({ image: { image: `${slowProxy.host}/test/slow:v1` } });
      pull.catch(() => undefined);
      const layer = image.layers[0]!.digest;
      for (let attempt = 0; attempt < 100 && slowProxy.blobDownloads(layer) === 0; attempt++) await sleep(50);
      assert.equal(slowProxy.blobDownloads(layer), 1, 'the layer download did not start');

      daemon.process.kill('SIGTERM');
      await daemon.waitForLog((record) => record.msg === 'shutting down' && record.signal === 'SIGTERM');
      const refused = await expectGrpcError(daemon.client.runtime.Version({}, { deadlineMs: 5000 }));
      assert.notEqual(refused.code, grpc.status.OK, 'a call after SIGTERM was accepted');

      const response = await pull;
      assert.equal(response.image_ref, image.configDigest);
      assert.equal(await daemon.stop(), 0);
      const finished = daemon.logRecords().findIndex((record) => record.msg === 'image pulled');
      const stopped = daemon.logRecords().findIndex((record) => record.msg === 'CRI server stopped');
      assert.ok(stopped > 0, 'the server did not log its stop');
      assert.ok(finished >= 0, 'the daemon did not log the pull');
      assert.ok(finished < stopped, 'the server stopped before the pull finished');
    } finally {
      await daemon.cleanup();
    }
  });
});

describe('pinned images', () => {
  let registry: TestRegistry;
  let daemon: TestDaemon;
  let pinnedByTag: BuiltImage;
  let pinnedById: BuiltImage;
  let loose: BuiltImage;

  before(async () => {
    registry = await startRegistry();
    pinnedByTag = await busyboxImage({ config: { Cmd: ['echo', 'pinned-by-tag'] } });
    pinnedById = await busyboxImage({ config: { Cmd: ['echo', 'pinned-by-id'] } });
    loose = await busyboxImage({ config: { Cmd: ['echo', 'loose'] } });
    await pushImage(registry, 'test/pause', pinnedByTag, '3.9');
    await pushImage(registry, 'test/pause', pinnedByTag, 'alias');
    await pushImage(registry, 'test/by-id', pinnedById, 'v1');
    await pushImage(registry, 'test/loose', loose, 'v1');

    daemon = await startImageDaemon({
      registries: insecureRegistries([registry.host]),
      image: { pinned_images: [`${registry.host}/test/pause:3.9`, pinnedById.configDigest] },
    });
    for (const reference of ['test/pause:3.9', 'test/pause:alias', 'test/by-id:v1', 'test/loose:v1']) {
      await daemon.client.image.PullImage({ image: { image: `${registry.host}/${reference}` } });
    }
  });

  after(async () => {
    await daemon?.cleanup();
    await registry?.stop();
  });

  test('status and list report pinned', async () => {
    const status = await daemon.client.image.ImageStatus({ image: { image: `${registry.host}/test/pause:alias` } });
    assert.equal(status.image?.pinned, true);
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: pinnedById.configDigest } })).image?.pinned, true);
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: loose.configDigest } })).image?.pinned, false);

    const listed = await daemon.client.image.ListImages({});
    const pinnedIds = listed.images.filter((image) => image.pinned).map((image) => image.id).sort();
    assert.deepEqual(pinnedIds, [pinnedByTag.configDigest, pinnedById.configDigest].sort());
  });

  test('remove by ID of a pinned image fails', async () => {
    for (const image of [pinnedByTag, pinnedById]) {
      const err = await expectGrpcError(daemon.client.image.RemoveImage({ image: { image: image.configDigest } }));
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.match(err.details, new RegExp(`image ${image.configDigest} is pinned by image\\.pinned_images`));
      assert.equal((await daemon.client.image.ImageStatus({ image: { image: image.configDigest } })).image?.id, image.configDigest);
    }
  });

  test('pinned tag cannot be removed', async () => {
    const pinnedTag = `${registry.host}/test/pause:3.9`;
    const err = await expectGrpcError(daemon.client.image.RemoveImage({ image: { image: pinnedTag } }));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, /test\/pause:3\.9 of image sha256:[0-9a-f]{64} is pinned/);
    const status = await daemon.client.image.ImageStatus({ image: { image: pinnedTag } });
    assert.equal(status.image?.id, pinnedByTag.configDigest, 'the pinned tag was removed');
    assert.equal(status.image?.pinned, true);
  });

  test('other tag of a pinned image can go', async () => {
    await daemon.client.image.RemoveImage({ image: { image: `${registry.host}/test/pause:alias` } });
    const status = await daemon.client.image.ImageStatus({ image: { image: pinnedByTag.configDigest } });
    assert.deepEqual(status.image?.repo_tags, [`${registry.host}/test/pause:3.9`]);
    assert.equal(status.image?.pinned, true);
  });

  test('last tag of an image pinned by ID stays', async () => {
    const err = await expectGrpcError(daemon.client.image.RemoveImage({ image: { image: `${registry.host}/test/by-id:v1` } }));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, /is pinned by image\.pinned_images/);
    assert.deepEqual((await daemon.client.image.ImageStatus({ image: { image: pinnedById.configDigest } })).image?.repo_tags, [`${registry.host}/test/by-id:v1`]);
  });

  test('unpinned image is removed', async () => {
    await daemon.client.image.RemoveImage({ image: { image: loose.configDigest } });
    assert.equal((await daemon.client.image.ImageStatus({ image: { image: loose.configDigest } })).image, null);
  });
});

describe('image pull through mirrors and short names', () => {
  let mirror: TestRegistry;
  let daemon: TestDaemon;
  let base: BuiltImage;
  let closedPort: number;

  before(async () => {
    mirror = await startRegistry();
    base = await busyboxImage();
    await pushImage(mirror, 'library/busybox', base, 'latest');
    await pushImage(mirror, 'library/busybox', base, 'aliased');
    closedPort = await freePort();

    // docker.io's location is a closed loopback port: the test reaches no outside address even
    // when the mirror misses.
    daemon = await startImageDaemon({
      registries: {
        'unqualified-search-registries': ['docker.io'],
        aliases: { tool: 'docker.io/library/busybox' },
        registry: [
          {
            prefix: 'docker.io',
            location: `127.0.0.1:${closedPort}`,
            insecure: true,
            mirror: [{ location: mirror.host, insecure: true }],
          },
          { prefix: 'blocked.example', location: 'blocked.example', blocked: true },
        ],
      },
      image: { pull_retries: 0 },
    });
  });

  after(async () => {
    await daemon?.cleanup();
    await mirror?.stop();
  });

  test('short name pulls through the mirror', async () => {
    const response = await daemon.client.image.PullImage({ image: { image: 'busybox' } });
    assert.equal(response.image_ref, base.configDigest);

    const status = await daemon.client.image.ImageStatus({ image: { image: 'busybox' } });
    assert.deepEqual(status.image?.repo_tags, ['docker.io/library/busybox:latest']);
    const qualified = await daemon.client.image.ImageStatus({ image: { image: 'docker.io/library/busybox:latest' } });
    assert.equal(qualified.image?.id, base.configDigest);
  });

  test('alias resolves a short name', async () => {
    const response = await daemon.client.image.PullImage({ image: { image: 'tool:aliased' } });
    assert.equal(response.image_ref, base.configDigest);
    const status = await daemon.client.image.ImageStatus({ image: { image: base.configDigest } });
    assert.ok(status.image?.repo_tags.includes('docker.io/library/busybox:aliased'));
  });

  test('mirror miss falls back to the primary', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: 'absent' } }));
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.match(err.details, new RegExp(`${mirror.host.replace('.', '\\.')}/library/absent: manifest "latest" not found`));
    assert.match(err.details, new RegExp(`127\\.0\\.0\\.1:${closedPort}/library/absent`));

    // A server-side failure is logged at error level with the RPC and the image it concerns.
    const failure = await daemon.waitForLog((record) => record.msg === 'request failed' && record.image === 'absent');
    assert.equal(failure.level, 'error');
    assert.equal(failure.rpc, '/runtime.v1.ImageService/PullImage');
    assert.equal(failure.code, 'UNAVAILABLE');
    assert.match(String(failure.err), /could not be pulled/);
  });

  test('blocked registry is rejected', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: 'blocked.example/app:v1' } }));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, /registry prefix "blocked\.example" is blocked/);
  });
});

describe('image pull downloads', () => {
  let registry: TestRegistry;
  let proxy: CountingProxy;
  /** A proxy that drops Range headers, like a registry without range support. */
  let noRangeProxy: CountingProxy;
  let daemon: TestDaemon;
  let image: BuiltImage;

  before(async () => {
    registry = await startRegistry();
    proxy = await CountingProxy.start(registry.host);
    noRangeProxy = await CountingProxy.start(registry.host, { stripRange: true });
    image = await randomImage(3, 512 * 1024, 7);
    await pushImage(registry, 'test/random', image, 'v1');
    await pushImage(registry, 'library/busybox', await busyboxImage(), 'latest');
    daemon = await startImageDaemon({ registries: insecureRegistries([proxy.host, noRangeProxy.host]), image: { pull_retries: 3 } });
  });

  after(async () => {
    await daemon?.cleanup();
    await proxy?.close();
    await noRangeProxy?.close();
    await registry?.stop();
  });

  /** Entries of the daemon's layer store directories, to check that a failed pull left nothing. */
  async function storeEntries(): Promise<{ layers: string[]; tmp: string[]; links: string[] }> {
    const store = path.join(daemon.dir, 'root', 'images');
    return {
      layers: (await readdir(path.join(store, 'layers'))).sort(),
      tmp: await readdir(path.join(store, 'tmp')),
      links: (await readdir(path.join(store, 'l'))).sort(),
    };
  }

  test('5 concurrent pulls fetch each blob once', async () => {
    const pulls = Array.from({ length: 5 }, () => daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } }));
    const responses = await Promise.all(pulls);
    for (const response of responses) assert.equal(response.image_ref, image.configDigest);

    for (const layer of image.layers) assert.equal(proxy.blobDownloads(layer.digest), 1, `layer ${layer.digest}`);
    assert.equal(proxy.blobDownloads(image.configDigest), 1);
  });

  test('manifest requests accept OCI and Docker types', async () => {
    const first = proxy.requests.length;
    await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    const manifestGets = proxy.requests.slice(first).filter((request) => request.method === 'GET' && request.path.includes('/manifests/'));
    assert.ok(manifestGets.length > 0, 'no manifest request went through the proxy');
    for (const request of manifestGets) {
      const accepted = (request.accept ?? '').split(',').map((type) => type.split(';')[0]!.trim());
      for (const mediaType of [
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
        'application/vnd.docker.distribution.manifest.list.v2+json',
      ]) {
        assert.ok(accepted.includes(mediaType), `Accept "${request.accept}" of ${request.path} lacks ${mediaType}`);
      }
    }
  });

  test('5xx answers are retried', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const layer = image.layers[0]!.digest;
    const first = proxy.requests.length;
    proxy.failNext(2, 503, new RegExp(`/blobs/${layer}$`));
    const response = await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    assert.equal(response.image_ref, image.configDigest);

    const gets = proxy.requests.slice(first).filter((request) => request.method === 'GET' && request.path.endsWith(layer));
    assert.deepEqual(gets.map((request) => request.status), [503, 503, 200]);
    // The delay before retry n is drawn from [base * 2^n / 2, base * 2^n] with a 250 ms base.
    const firstWait = gets[1]!.receivedAt - gets[0]!.receivedAt;
    const secondWait = gets[2]!.receivedAt - gets[1]!.receivedAt;
    assert.ok(firstWait >= 120, `first retry came after ${firstWait} ms`);
    assert.ok(secondWait >= 245, `second retry came after ${secondWait} ms`);
    const retries = daemon.logRecords().filter((record) => record.blob === layer && String(record.msg).endsWith('; retrying'));
    assert.deepEqual(retries.map((record) => record.attempt), [1, 2]);
  });

  test('broken-off blob download is retried', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const layer = image.layers[0]!.digest;
    const config = image.configDigest;
    const before = { layer: proxy.blobDownloads(layer), config: proxy.blobDownloads(config) };
    proxy.resetNextBlobs(1, layer);
    const response = await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    assert.equal(response.image_ref, image.configDigest);
    assert.equal(proxy.blobDownloads(layer), before.layer + 2);

    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    proxy.resetNextBlobs(1, config);
    await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    assert.equal(proxy.blobDownloads(config), before.config + 3);
  });

  test('4xx answers are not retried', async () => {
    const before = proxy.requests.length;
    proxy.failNext(1, 400, /\/manifests\//);
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${proxy.host}/library/busybox:latest` } }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /HTTP 400/);
    const manifestRequests = proxy.requests.slice(before).filter((request) => request.path.includes('/manifests/'));
    assert.equal(manifestRequests.length, 1);
  });

  test('shared base layer downloads once', async () => {
    const base = await busyboxImage();
    const layered = await whiteoutImage();
    assert.equal(layered.layers[0]!.digest, base.layers[0]!.digest);
    await pushImage(registry, 'test/whiteout', layered, 'v1');

    await daemon.client.image.PullImage({ image: { image: `${proxy.host}/library/busybox:latest` } });
    await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/whiteout:v1` } });
    assert.equal(proxy.blobDownloads(base.layers[0]!.digest), 1);
    assert.equal(proxy.blobDownloads(layered.layers[1]!.digest), 1);
  });

  test('concurrent pulls share a base layer download', async () => {
    const shared: TarEntry[] = [{ name: 'shared.bin', content: randomBytes(256 * 1024) }];
    const first = await buildImage({ layers: [{ entries: shared }, { entries: [{ name: 'first', content: 'first\n' }] }] });
    const second = await buildImage({ layers: [{ entries: shared }, { entries: [{ name: 'second', content: 'second\n' }] }] });
    const base = first.layers[0]!.digest;
    assert.equal(second.layers[0]!.digest, base, 'the fixture images do not share their base layer');
    await pushImage(registry, 'test/shared-first', first, 'v1');
    await pushImage(registry, 'test/shared-second', second, 'v1');

    const responses = await Promise.all([
      daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/shared-first:v1` } }),
      daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/shared-second:v1` } }),
    ]);
    assert.deepEqual(responses.map((response) => response.image_ref), [first.configDigest, second.configDigest]);
    assert.equal(proxy.blobDownloads(base), 1, 'the shared base layer was downloaded more than once');
    assert.equal(proxy.blobDownloads(first.layers[1]!.digest), 1);
    assert.equal(proxy.blobDownloads(second.layers[1]!.digest), 1);
  });

  test('broken-off layer resumes with Range', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const layer = image.layers[1]!;
    const first = proxy.requests.length;
    proxy.resetNextBlobs(1, layer.digest);

    const response = await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    assert.equal(response.image_ref, image.configDigest);

    const gets = proxy.requests.slice(first).filter((request) => request.method === 'GET' && request.path.endsWith(layer.digest));
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.range, undefined);
    const offset = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
    assert.ok(offset > 0, `second request range: ${gets[1]!.range}`);
    assert.ok(offset < layer.size, `second request range: ${gets[1]!.range}`);
    assert.equal(gets[1]!.status, 206);
  });

  test('registry without Range support restarts the body', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const layer = image.layers[2]!;
    const first = noRangeProxy.requests.length;
    noRangeProxy.resetNextBlobs(1, layer.digest);

    const response = await daemon.client.image.PullImage({ image: { image: `${noRangeProxy.host}/test/random:v1` } });
    assert.equal(response.image_ref, image.configDigest);

    const gets = noRangeProxy.requests.slice(first).filter((request) => request.method === 'GET' && request.path.endsWith(layer.digest));
    assert.equal(gets.length, 2);
    assert.match(gets[1]!.range ?? '', /^bytes=\d+-$/);
    assert.equal(gets[1]!.status, 200, 'the registry sent the whole blob again');

    const status = await daemon.client.image.ImageStatus({ image: { image: image.configDigest } });
    assert.equal(status.image?.size, String(image.layers.reduce((sum, built) => sum + built.tarBytes, 0)));
  });

  test('corrupted layer fails naming the blob', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const before = await storeEntries();
    const layer = image.layers[0]!;
    proxy.corruptNextBlobs(1, layer.digest);

    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, new RegExp(`blob ${layer.digest}: the content has digest sha256:[a-f0-9]{64}; the registry sent other content`));
    assert.deepEqual(await storeEntries(), before);
    const status = await daemon.client.image.ImageStatus({ image: { image: image.configDigest } });
    assert.equal(status.image, null);

    const retried = await daemon.client.image.PullImage({ image: { image: `${proxy.host}/test/random:v1` } });
    assert.equal(retried.image_ref, image.configDigest);
  });
});
