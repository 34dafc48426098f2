import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'smol-toml';
import { pino } from 'pino';
import { ConfigSchema, defaultConfig } from '../../src/config/load.js';
import type { BerthConfig } from '../../src/config/types.js';
import { DefaultImageStore } from '../../src/image/default-store.js';
import { lgetxattr } from '../../src/image/libc.js';
import { isMountPoint } from '../../src/image/rootfs.js';
import { BerthError } from '../../src/errors.js';
import {
  buildImage,
  busyboxEntries,
  busyboxImage,
  escapeAbsoluteImage,
  escapeDotDotImage,
  escapeLowerSymlinkImage,
  escapeSymlinkImage,
  FIXTURE_MTIME,
  whiteoutImage,
  type BuiltImage,
  type TarEntry,
} from '../support/images.js';
import { pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

const log = pino({ level: 'silent' });

/** Runs `call` and returns the BerthError it throws; fails when it succeeds. */
async function expectBerthError(call: Promise<unknown>): Promise<BerthError> {
  try {
    await call;
  } catch (err) {
    assert.ok(err instanceof BerthError, `expected a BerthError, got ${String(err)}`);
    return err;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

describe('image store rootfs and extraction', () => {
  let registry: TestRegistry;
  let dir: string;
  let store: DefaultImageStore;
  let config: BerthConfig;
  const mounted: string[] = [];

  before(async () => {
    registry = await startRegistry();
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-rootfs-'));
    const registriesConf = path.join(dir, 'registries.conf');
    await writeFile(registriesConf, stringify({ registry: [{ prefix: registry.host, location: registry.host, insecure: true }] }));

    config = defaultConfig(await ConfigSchema.load());
    config.root = path.join(dir, 'root');
    config.image = { ...config.image, registries_conf: registriesConf, registries_conf_dir: path.join(dir, 'none'), certs_dir: path.join(dir, 'certs'), auth_file: '' };
    store = await DefaultImageStore.open(config, log);
  });

  after(async () => {
    for (const id of mounted) await store?.removeRootfs(id, log).catch(() => undefined);
    await store?.close();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function pushAndPull(repository: string, image: BuiltImage): Promise<string> {
    await pushImage(registry, repository, image, 'v1');
    const record = await store.pull(`${registry.host}/${repository}:v1`, { log });
    return record.id;
  }

  async function storeEntries(): Promise<{ layers: string[]; tmp: string[]; links: string[] }> {
    const imagesDir = path.join(config.root, 'images');
    return {
      layers: (await readdir(path.join(imagesDir, 'layers'))).sort(),
      tmp: await readdir(path.join(imagesDir, 'tmp')),
      links: (await readdir(path.join(imagesDir, 'l'))).sort(),
    };
  }

  test('whiteouts and opaque dirs in the overlay', async () => {
    const id = await pushAndPull('test/whiteout', await whiteoutImage());
    const rootfs = await store.createRootfs('whiteout-ctr', id, log);
    mounted.push('whiteout-ctr');
    const root = rootfs.path;

    assert.ok(await isMountPoint(root));
    await assert.rejects(lstat(path.join(root, 'etc/hosts')), { code: 'ENOENT' });
    assert.equal(await readFile(path.join(root, 'etc/added'), 'utf8'), 'added\n');
    assert.match(await readFile(path.join(root, 'etc/passwd'), 'utf8'), /^root:x:0:0:/);

    assert.deepEqual((await readdir(path.join(root, 'opt/data'))).sort(), ['new.txt']);
    assert.equal(await readFile(path.join(root, 'opt/other.txt'), 'utf8'), 'other\n');
    assert.equal((await lstat(path.join(root, 'opt/data'))).mode & 0o7777, 0o750);
  });

  test('modes, symlinks and mtimes survive', async () => {
    const id = await pushAndPull('library/busybox', await busyboxImage());
    const rootfs = await store.createRootfs('busybox-ctr', id, log);
    mounted.push('busybox-ctr');
    const root = rootfs.path;

    assert.equal((await lstat(path.join(root, 'tmp'))).mode & 0o7777, 0o1777);
    assert.equal((await lstat(path.join(root, 'root'))).mode & 0o7777, 0o700);
    assert.equal((await lstat(path.join(root, 'bin/busybox'))).mode & 0o7777, 0o755);
    assert.equal(await readlink(path.join(root, 'bin/sh')), 'busybox');
    assert.equal((await lstat(path.join(root, 'etc/passwd'))).mtime.getTime(), FIXTURE_MTIME.getTime());
    assert.equal((await lstat(path.join(root, 'etc'))).mtime.getTime(), FIXTURE_MTIME.getTime());
  });

  test('hard links, devices, owners and xattrs', async () => {
    const image = await buildImage({
      layers: [
        {
          entries: [
            { name: 'data/', type: 'directory' },
            { name: 'data/original', content: 'linked\n' },
            { name: 'data/hardlink', type: 'link', linkname: 'data/original' },
            { name: 'data/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
            { name: 'data/loop', type: 'block-device', devmajor: 7, devminor: 0, mode: 0o660 },
            { name: 'data/pipe', type: 'fifo', mode: 0o600 },
            { name: 'data/owned', content: 'owned\n', uid: 1234, gid: 5678, mode: 0o4755 },
            { name: 'data/tagged', content: 'tagged\n', xattrs: { 'user.berth': 'hello', 'trusted.berth': 'root-only' } },
          ],
        },
      ],
    });
    const id = await pushAndPull('test/metadata', image);
    const root = (await store.createRootfs('metadata-ctr', id, log)).path;
    mounted.push('metadata-ctr');

    const original = await lstat(path.join(root, 'data/original'));
    const hardlink = await lstat(path.join(root, 'data/hardlink'));
    assert.equal(original.ino, hardlink.ino);
    assert.equal(original.nlink, 2);

    const nullDevice = await lstat(path.join(root, 'data/null'));
    assert.ok(nullDevice.isCharacterDevice());
    assert.equal(nullDevice.rdev, (1 << 8) | 3);
    assert.ok((await lstat(path.join(root, 'data/loop'))).isBlockDevice());
    assert.ok((await lstat(path.join(root, 'data/pipe'))).isFIFO());

    const owned = await lstat(path.join(root, 'data/owned'));
    assert.equal(owned.uid, 1234);
    assert.equal(owned.gid, 5678);
    assert.equal(owned.mode & 0o7777, 0o4755);

    assert.equal(lgetxattr(path.join(root, 'data/tagged'), 'user.berth')?.toString(), 'hello');
    assert.equal(lgetxattr(path.join(root, 'data/tagged'), 'trusted.berth')?.toString(), 'root-only');
  });

  test('writes land in the upper dir', async () => {
    const rootfs = await store.createRootfs('busybox-ctr', (await store.get(`${registry.host}/library/busybox:v1`))!.id, log);
    const before = await store.rootfsUsage('busybox-ctr');
    await writeFile(path.join(rootfs.path, 'tmp/written'), Buffer.alloc(10_000));
    const afterWrite = await store.rootfsUsage('busybox-ctr');

    assert.equal(afterWrite.usedBytes - before.usedBytes, 10_000);
    assert.ok(afterWrite.inodesUsed > before.inodesUsed);
    assert.equal((await readFile(path.join(rootfs.upperDir, 'tmp/written'))).length, 10_000);
  });

  test('image in use cannot be removed', async () => {
    const image = await store.get(`${registry.host}/library/busybox:v1`);
    const err = await expectBerthError(store.remove(`${registry.host}/library/busybox:v1`, log));
    assert.equal(err.kind, 'FailedPrecondition');
    assert.match(err.message, /in use by the rootfs of container\(s\) busybox-ctr/);

    await store.removeRootfs('busybox-ctr', log);
    mounted.splice(mounted.indexOf('busybox-ctr'), 1);
    await store.removeRootfs('busybox-ctr', log);
    await store.remove(`${registry.host}/library/busybox:v1`, log);
    assert.equal(await store.get(image!.id), undefined);
  });

  test('createRootfs rejects bad ids and images', async () => {
    const image = await store.get(`${registry.host}/test/whiteout:v1`);
    const badId = await expectBerthError(store.createRootfs('../escape', image!.id, log));
    assert.equal(badId.kind, 'InvalidArgument');
    const missing = await expectBerthError(store.createRootfs('missing-ctr', `sha256:${'1'.repeat(64)}`, log));
    assert.equal(missing.kind, 'NotFound');
    const other = await store.pull(`${registry.host}/test/metadata:v1`, { log });
    const clash = await expectBerthError(store.createRootfs('whiteout-ctr', other.id, log));
    assert.equal(clash.kind, 'AlreadyExists');
  });

  test('mountRootfs remounts after an unmount', async () => {
    const rootfs = await store.mountRootfs('whiteout-ctr', log);
    const { execa } = await import('execa');
    await execa('umount', [rootfs.path]);
    assert.equal(await isMountPoint(rootfs.path), false);
    await store.mountRootfs('whiteout-ctr', log);
    assert.equal(await readFile(path.join(rootfs.path, 'etc/added'), 'utf8'), 'added\n');
  });

  test('many layers mount through short links', async () => {
    const layers = Array.from({ length: 120 }, (_, index) => ({ entries: [{ name: `layer${index}`, content: `${index}\n` }] }));
    const id = await pushAndPull('test/many', await buildImage({ layers: [{ entries: await busyboxEntries() }, ...layers] }));
    const root = (await store.createRootfs('many-ctr', id, log)).path;
    mounted.push('many-ctr');
    assert.equal(await readFile(path.join(root, 'layer0'), 'utf8'), '0\n');
    assert.equal(await readFile(path.join(root, 'layer119'), 'utf8'), '119\n');
  });

  test('diff ID mismatch fails the pull', async () => {
    const image = await buildImage({ layers: [{ entries: [{ name: 'x', content: 'x' }] }], diffIdsOverride: [`sha256:${'ab'.repeat(32)}`] });
    const before = await storeEntries();
    await pushImage(registry, 'test/mismatch', image, 'v1');
    const err = await expectBerthError(store.pull(`${registry.host}/test/mismatch:v1`, { log }));
    assert.equal(err.kind, 'InvalidArgument');
    assert.match(err.message, /uncompressed content has digest sha256:[a-f0-9]{64}, but the config's rootfs\.diff_ids gives/);
    assert.deepEqual(await storeEntries(), before);
  });

  describe('escaping layers', () => {
    let outside: string;

    before(async () => {
      outside = await mkdtemp(path.join(os.tmpdir(), 'berth-outside-'));
    });

    after(async () => {
      if (outside) await rm(outside, { recursive: true, force: true });
    });

    const cases: [string, (target: string) => Promise<BuiltImage>, RegExp][] = [
      ['dot-dot', (target) => escapeDotDotImage(path.join(target, 'pwned')), /tar entry "(\.\.\/)+.*pwned": "\.\." components are not allowed/],
      ['absolute', (target) => escapeAbsoluteImage(path.join(target, 'pwned')), /tar entry "\/.*pwned": absolute names are not allowed/],
      ['symlink', (target) => escapeSymlinkImage(target), /tar entry "escape\/pwned": its parent "escape" is a symbolic link created by an earlier entry/],
      ['lower-symlink', (target) => escapeLowerSymlinkImage(target), /tar entry "escape\/pwned": its parent "escape" is a symbolic link in a lower layer/],
    ];

    test('hard-link escapes fail the pull', async () => {
      // The secret lives outside `outside`, so the checks below can expect that directory empty.
      const secretDir = await mkdtemp(path.join(os.tmpdir(), 'berth-secret-'));
      const secret = path.join(secretDir, 'secret');
      await writeFile(secret, 'host secret\n');
      try {
        const hardLinkCases: [string, TarEntry[], RegExp][] = [
          ['dot-dot', [{ name: 'stolen', type: 'link', linkname: `${'../'.repeat(24)}${secret.replace(/^\/+/, '')}` }], /tar entry "stolen": hard link target "(\.\.\/)+.*secret": "\.\." components are not allowed/],
          ['absolute', [{ name: 'stolen', type: 'link', linkname: secret }], /tar entry "stolen": hard link target "\/.*secret": absolute names are not allowed/],
          [
            'through-symlink',
            [
              { name: 'escape', type: 'symlink', linkname: secretDir },
              { name: 'stolen', type: 'link', linkname: 'escape/secret' },
            ],
            /tar entry "stolen": hard link target "escape\/secret" passes through the symbolic link "escape"/,
          ],
        ];
        for (const [name, entries, message] of hardLinkCases) {
          const before = await storeEntries();
          await pushImage(registry, `test/hardlink-${name}`, await buildImage({ layers: [{ entries }] }), 'v1');

          const err = await expectBerthError(store.pull(`${registry.host}/test/hardlink-${name}:v1`, { log }));
          assert.equal(err.kind, 'InvalidArgument', `${name}: ${err.message}`);
          assert.match(err.message, message, name);
          assert.equal((await lstat(secret)).nlink, 1, `${name}: the host file got a hard link`);
          assert.deepEqual(await storeEntries(), before, name);
        }
      } finally {
        await rm(secretDir, { recursive: true, force: true });
      }
    });

    for (const [name, build, message] of cases) {
      test(`${name} escape fails the pull`, async () => {
        const before = await storeEntries();
        await pushImage(registry, `test/escape-${name}`, await build(outside), 'v1');

        const err = await expectBerthError(store.pull(`${registry.host}/test/escape-${name}:v1`, { log }));
        assert.equal(err.kind, 'InvalidArgument');
        assert.match(err.message, message);
        assert.deepEqual(await readdir(outside), []);
        assert.deepEqual(await storeEntries(), before);
        assert.equal(await store.get(`${registry.host}/test/escape-${name}:v1`), undefined);
      });
    }
  });
});
