import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ancestors, classifyWhiteout, normaliseEntryName, UnsafeEntryError } from '../../src/image/tar-paths.js';
import { chainIds } from '../../src/image/layer-store.js';
import { selectPlatform, type ImageIndex } from '../../src/image/manifest.js';

test('entry names normalise', () => {
  const cases: [string, string][] = [
    ['./etc/passwd', 'etc/passwd'],
    ['etc//passwd', 'etc/passwd'],
    ['etc/./passwd', 'etc/passwd'],
    ['bin/', 'bin'],
    ['./', ''],
    ['a/b.c/..d', 'a/b.c/..d'],
  ];
  for (const [input, expected] of cases) assert.equal(normaliseEntryName(input), expected, input);
});

test('escaping entry names are rejected', () => {
  const cases: [string, RegExp][] = [
    ['../etc/passwd', /"\.\." components/],
    ['a/../../b', /"\.\." components/],
    ['a/..', /"\.\." components/],
    ['/etc/passwd', /absolute names/],
    ['a\0b', /NUL byte/],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => normaliseEntryName(input), (err: unknown) => err instanceof UnsafeEntryError && err.entry === input && message.test(err.message), input);
  }
});

test('ancestors outermost first', () => {
  assert.deepEqual(ancestors('a/b/c'), ['a', 'a/b']);
  assert.deepEqual(ancestors('a'), []);
});

test('whiteout classification', () => {
  assert.deepEqual(classifyWhiteout('etc/.wh.hosts'), { kind: 'whiteout', target: 'etc/hosts' });
  assert.deepEqual(classifyWhiteout('.wh.top'), { kind: 'whiteout', target: 'top' });
  assert.deepEqual(classifyWhiteout('opt/data/.wh..wh..opq'), { kind: 'opaque', dir: 'opt/data' });
  assert.deepEqual(classifyWhiteout('.wh..wh..opq'), { kind: 'opaque', dir: '' });
  assert.deepEqual(classifyWhiteout('.wh..wh.plnk/123'), { kind: 'none' });
  assert.deepEqual(classifyWhiteout('a/.wh..wh.plnk'), { kind: 'meta' });
  assert.deepEqual(classifyWhiteout('etc/hosts.wh.x'), { kind: 'none' });
  assert.throws(() => classifyWhiteout('a/.wh...'), UnsafeEntryError);
  assert.throws(() => classifyWhiteout('a/.wh.'), UnsafeEntryError);
});

test('chain IDs follow the OCI formula', () => {
  const a = `sha256:${'a'.repeat(64)}`;
  const b = `sha256:${'b'.repeat(64)}`;
  const ids = chainIds([a, b]);
  assert.equal(ids[0], a);
  // sha256("sha256:aaa… sha256:bbb…"), computed with sha256sum.
  assert.equal(ids[1], 'sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c');
});

test('platform selection prefers exact variants', () => {
  const entry = (architecture: string, variant?: string, digit = '1') => ({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: `sha256:${digit.repeat(64)}`,
    size: 1,
    platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
  });
  const index: ImageIndex = { kind: 'index', mediaType: '', manifests: [entry('arm', 'v6', '1'), entry('arm', undefined, '2'), entry('arm', 'v7', '3'), entry('arm64', undefined, '4'), entry('amd64', undefined, '5')] };
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v7' })?.digest, `sha256:${'3'.repeat(64)}`);
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v5' })?.digest, `sha256:${'2'.repeat(64)}`);
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'arm64', variant: 'v8' })?.digest, `sha256:${'4'.repeat(64)}`);
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 'amd64' })?.digest, `sha256:${'5'.repeat(64)}`);
  assert.equal(selectPlatform(index, { os: 'linux', architecture: 's390x' }), undefined);
  assert.equal(selectPlatform(index, { os: 'windows', architecture: 'amd64' }), undefined);
});
