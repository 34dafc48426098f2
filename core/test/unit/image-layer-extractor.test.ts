import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, lchown, lstat, mkdir, mkdtemp, rm, symlink, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { rangeStart } from '../../src/image/layer-download.js';
import { LayerExtractor, type EntryHeader, type EntryStream } from '../../src/image/layer-extractor.js';
import { mknod, S_IFCHR } from '../../src/image/libc.js';
import { UnsafeEntryError } from '../../src/image/tar-paths.js';
import { packTar, type TarEntry } from '../support/images.js';

/** 2020-01-01T00:00:00Z, the mtime given to lower-layer directories. */
const LOWER_MTIME = new Date(Date.UTC(2020, 0, 1));

/** Unpacks `entries` into `root` as the worker does, without the lower-layer step. */
async function unpack(root: string, entries: TarEntry[]): Promise<LayerExtractor> {
  const extractor = new LayerExtractor(root);
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    extractor.entry(header as EntryHeader, stream as unknown as EntryStream).then(
      () => next(),
      (err: unknown) => {
        stream.resume();
        next(err as Error);
      },
    );
  });
  await pipeline(Readable.from([await packTar(entries)]), extract);
  extractor.finishEntries();
  return extractor;
}

describe('layer extractor lower-layer step', () => {
  let dir: string;
  let lower: string;
  let count = 0;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-extractor-'));
    lower = path.join(dir, 'lower');
    await mkdir(path.join(lower, 'opt'), { recursive: true });
    await chmod(path.join(lower, 'opt'), 0o750);
    await lchown(path.join(lower, 'opt'), 1000, 1001);
    await symlink('/tmp', path.join(lower, 'escape'));
    await mkdir(path.join(lower, 'data'));
    await chmod(path.join(lower, 'data'), 0o711);
    await utimes(path.join(lower, 'opt'), LOWER_MTIME, LOWER_MTIME);
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function newRoot(): Promise<string> {
    const root = path.join(dir, `layer-${count++}`);
    await mkdir(root);
    return root;
  }

  test('implicit parent takes lower metadata', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [{ name: 'opt/file', content: 'x' }]);
    const unpacked = await lstat(path.join(root, 'opt'));
    assert.equal(unpacked.mode & 0o7777, 0o755, 'before the lower layers are known');

    assert.equal(extractor.applyLowerLayers([lower]), 1);
    const stats = await lstat(path.join(root, 'opt'));
    assert.equal(stats.mode & 0o7777, 0o750);
    assert.equal(stats.uid, 1000);
    assert.equal(stats.gid, 1001);
    assert.equal(stats.mtime.getTime(), LOWER_MTIME.getTime());
  });

  test('explicit directory entry wins', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [
      { name: 'opt/file', content: 'x' },
      { name: 'opt/', type: 'directory', mode: 0o700 },
    ]);

    assert.equal(extractor.applyLowerLayers([lower]), 0);
    const stats = await lstat(path.join(root, 'opt'));
    assert.equal(stats.mode & 0o7777, 0o700);
    assert.equal(stats.uid, 0);
  });

  test('lower symlink parent is rejected', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [{ name: 'escape/pwned', content: 'x' }]);

    assert.throws(
      () => extractor.applyLowerLayers([lower]),
      (err: unknown) =>
        err instanceof UnsafeEntryError && err.entry === 'escape/pwned' && /its parent "escape" is a symbolic link in a lower layer/.test(err.message),
    );
  });

  test('lower symlink opaque dir is rejected', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [{ name: 'escape/.wh..wh..opq', content: '' }]);

    assert.throws(
      () => extractor.applyLowerLayers([lower]),
      (err: unknown) => err instanceof UnsafeEntryError && /"escape" is a symbolic link in a lower layer/.test(err.message),
    );
  });

  test('opaque dir takes lower mode', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [{ name: 'data/.wh..wh..opq', content: '' }]);

    assert.equal(extractor.applyLowerLayers([lower]), 1);
    assert.equal((await lstat(path.join(root, 'data'))).mode & 0o7777, 0o711);
  });

  test('whited-out implicit dir is left alone', async () => {
    const root = await newRoot();
    const extractor = await unpack(root, [
      { name: 'opt/file', content: 'x' },
      { name: '.wh.opt', content: '' },
    ]);

    assert.equal(extractor.applyLowerLayers([lower]), 0);
    const stats = await lstat(path.join(root, 'opt'));
    assert.ok(stats.isCharacterDevice(), 'opt is a whiteout');
  });

  test('whiteout in a higher lower hides the dir', async () => {
    const higher = path.join(dir, 'higher');
    await mkdir(higher);
    mknod(path.join(higher, 'opt'), S_IFCHR, 0, 0);
    const root = await newRoot();
    const extractor = await unpack(root, [{ name: 'opt/file', content: 'x' }]);

    assert.equal(extractor.applyLowerLayers([higher, lower]), 0);
    assert.equal((await lstat(path.join(root, 'opt'))).mode & 0o7777, 0o755);
  });

  test('entries below a directory keep its mtime', async () => {
    const root = await newRoot();
    await unpack(root, [
      { name: 'etc/', type: 'directory' },
      { name: 'etc/passwd', content: 'root:x:0:0::/:/bin/sh\n' },
    ]);
    assert.equal((await lstat(path.join(root, 'etc'))).mtime.getTime(), Date.UTC(2024, 0, 1));
  });
});

test('Content-Range start offsets', () => {
  const cases: [string | undefined, number | undefined][] = [
    ['bytes 100-199/200', 100],
    ['bytes 0-0/*', 0],
    [' bytes 5-9/10 ', 5],
    ['bytes */200', undefined],
    ['items 1-2/3', undefined],
    ['bytes 99999999999999999999-1/2', undefined],
    ['', undefined],
    [undefined, undefined],
  ];
  for (const [header, expected] of cases) assert.equal(rangeStart(header), expected, String(header));
});
