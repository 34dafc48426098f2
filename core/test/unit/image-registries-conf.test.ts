import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '../../src/errors.js';
import { formatReference, parseReference } from '../../src/image/reference.js';
import { findRegistry, loadRegistriesConfig, parseRegistriesFile, pullEndpoints, resolveNames } from '../../src/image/registries-conf.js';

let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'berth-regconf-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const MAIN = `
unqualified-search-registries = ["quay.io", "docker.io"]

[aliases]
"tool" = "registry.example/tools/tool"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.local:5000"
insecure = true

[[registry.mirror]]
location = "digests.local/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io/library/special"
location = "special.local/special"

[[registry]]
location = "bad.example"
blocked = true

[[registry]]
prefix = "*.internal.example"
insecure = true
`;

test('missing files give the defaults', async () => {
  const config = await loadRegistriesConfig(path.join(dir, 'absent.conf'), path.join(dir, 'absent.d'));
  assert.deepEqual(config.searchRegistries, ['docker.io']);
  assert.deepEqual(config.files, []);
});

test('drop-ins override in lexical order', async () => {
  const main = path.join(dir, 'registries.conf');
  const dropIns = path.join(dir, 'registries.conf.d');
  await writeFile(main, MAIN);
  await mkdir(dropIns, { recursive: true });
  await writeFile(path.join(dropIns, '20-second.conf'), 'unqualified-search-registries = ["second.example"]\n');
  await writeFile(path.join(dropIns, '10-first.conf'), '[aliases]\n"other" = "first.example/other"\n[[registry]]\nlocation = "bad.example"\nblocked = false\n');
  await writeFile(path.join(dropIns, 'ignored.txt'), 'not toml');

  const config = await loadRegistriesConfig(main, dropIns);
  assert.deepEqual(config.files.map((file) => path.basename(file)), ['registries.conf', '10-first.conf', '20-second.conf']);
  assert.deepEqual(config.searchRegistries, ['second.example']);
  assert.equal(config.aliases.get('tool'), 'registry.example/tools/tool');
  assert.equal(config.aliases.get('other'), 'first.example/other');
  assert.equal(findRegistry(config, 'bad.example/app')?.blocked, false);
});

test('short names resolve by alias, then search registries', () => {
  const config = parseRegistriesFile(MAIN, 'main.conf');
  const full = { ...config, files: ['main.conf'], searchRegistries: config.searchRegistries ?? [] };
  const names = (input: string): string[] => {
    const parsed = parseReference(input);
    return resolveNames(full, parsed.reference, parsed.qualified).map(formatReference);
  };
  assert.deepEqual(names('busybox:1'), ['quay.io/busybox:1', 'docker.io/library/busybox:1']);
  assert.deepEqual(names('tool:v2'), ['registry.example/tools/tool:v2']);
  assert.deepEqual(names('example.com/app'), ['example.com/app']);
  assert.throws(() => resolveNames({ ...full, searchRegistries: [] }, parseReference('x').reference, false), InvalidArgumentError);
});

test('endpoints list mirrors, then the primary', () => {
  const parsed = parseRegistriesFile(MAIN, 'main.conf');
  const config = { ...parsed, files: ['main.conf'], searchRegistries: [] };
  const byTag = pullEndpoints(config, parseReference('docker.io/library/busybox:1').reference);
  assert.deepEqual(byTag.map((e) => `${e.host}/${e.path}|${e.insecure}|${e.mirror}`), [
    'mirror.local:5000/library/busybox|true|true',
    'docker.io/library/busybox|false|false',
  ]);

  const byDigest = pullEndpoints(config, parseReference(`docker.io/library/busybox@sha256:${'b'.repeat(64)}`).reference);
  assert.deepEqual(byDigest.map((e) => `${e.host}/${e.path}`), ['mirror.local:5000/library/busybox', 'digests.local/hub/library/busybox', 'docker.io/library/busybox']);

  const special = pullEndpoints(config, parseReference('docker.io/library/special:1').reference);
  assert.deepEqual(special.map((e) => `${e.host}/${e.path}`), ['special.local/special']);

  const wildcard = pullEndpoints(config, parseReference('a.internal.example/app').reference);
  assert.deepEqual(wildcard.map((e) => `${e.host}/${e.path}|${e.insecure}`), ['a.internal.example/app|true']);

  assert.throws(() => pullEndpoints(config, parseReference('bad.example/app').reference), FailedPreconditionError);
  assert.deepEqual(pullEndpoints(config, parseReference('other.example/app').reference).map((e) => e.host), ['other.example']);
});

test('invalid files are rejected with the key', () => {
  const cases: [string, RegExp][] = [
    ['[registries.search]\nregistries = ["a"]\n', /version 1 format/],
    ['unqualified-search-registries = "docker.io"\n', /unqualified-search-registries: must be an array/],
    ['[[registry]]\nprefix = "https://x.example"\n', /must not have a URL scheme/],
    ['[[registry]]\ninsecure = true\n', /set prefix or location/],
    ['[[registry]]\nlocation = "x.example"\ninsecure = "yes"\n', /insecure: must be true or false/],
    ['[[registry]]\nlocation = "x.example"\n[[registry.mirror]]\ninsecure = true\n', /mirror\[0\]\.location: is required/],
    ['[[registry]]\nlocation = "x.example"\n[[registry.mirror]]\nlocation = "m.example"\npull-from-mirror = "some"\n', /pull-from-mirror: "some" is not allowed/],
    ['[aliases]\n"x" = "short"\n', /must be a fully qualified name/],
    ['[[registry]]\nprefix = "*.x.example/path"\n', /wildcard/],
    ['not = [toml', /invalid TOML/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseRegistriesFile(text, 'test.conf'), (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message) && err.message.startsWith('test.conf'), text);
  }
});
