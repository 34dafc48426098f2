import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, ConfigSchema, deepMerge, defaultConfig, finishConfig } from '../../src/config/load.js';
import { pointerToKeyPath } from '../../src/schema/validator.js';

describe('deepMerge', () => {
  it('merges tables and replaces arrays and scalars', () => {
    const merged = deepMerge(
      { a: 1, table: { keep: true, list: [1, 2], inner: { x: 1 } } },
      { a: 2, table: { list: [3], inner: { y: 2 } } },
    );
    assert.deepEqual(merged, { a: 2, table: { keep: true, list: [3], inner: { x: 1, y: 2 } } });
  });

  it('does not modify its inputs', () => {
    const base = { table: { x: 1 } };
    deepMerge(base, { table: { x: 2 } });
    assert.deepEqual(base, { table: { x: 1 } });
  });
});

describe('pointerToKeyPath', () => {
  it('joins bare keys with dots', () => {
    assert.equal(pointerToKeyPath('/runtime/shm_size'), 'runtime.shm_size');
  });

  it('quotes keys that are not bare words', () => {
    assert.equal(pointerToKeyPath('/runtimes/a.b/driver'), 'runtimes."a.b".driver');
  });

  it('decodes escaped slashes and tildes', () => {
    assert.equal(pointerToKeyPath('/plugins/x~1y~0z'), 'plugins."x/y~z"');
  });

  it('names the root', () => {
    assert.equal(pointerToKeyPath(''), '(root)');
  });
});

describe('embedded defaults', () => {
  it('serve runc by default with crun beside it', async () => {
    const config = defaultConfig(await ConfigSchema.load());
    assert.equal(config.listen, '/run/berth/berth.sock');
    assert.equal(config.root, '/var/lib/berth');
    assert.equal(config.runroot, '/run/berth');
    assert.equal(config.default_runtime, 'runc');
    assert.deepEqual(Object.keys(config.runtimes).sort(), ['crun', 'runc']);
  });

  it('reject a handler name that is not a DNS label', async () => {
    const schema = await ConfigSchema.load();
    assert.throws(
      () => finishConfig({ runtimes: { Bad_Name: { driver: 'runc' } } }, schema, 'test'),
      (err: unknown) => err instanceof ConfigError && /runtimes\.Bad_Name/.test(err.message) && /invalid key name/.test(err.message),
    );
  });

  it('require a driver in each handler', async () => {
    const schema = await ConfigSchema.load();
    assert.throws(
      () => finishConfig({ runtimes: { runc: { options: {} } } }, schema, 'test'),
      (err: unknown) => err instanceof ConfigError && /runtimes\.runc\.driver \(\/runtimes\/runc\/driver\): required key is missing/.test(err.message),
    );
  });
});

describe('image.worker_idle_seconds', () => {
  it('defaults to 30 seconds', async () => {
    const config = defaultConfig(await ConfigSchema.load());
    assert.equal(config.image.worker_idle_seconds, 30);
  });

  it('accepts 0 to keep workers', async () => {
    const config = finishConfig({ image: { worker_idle_seconds: 0 } }, await ConfigSchema.load(), 'test');
    assert.equal(config.image.worker_idle_seconds, 0);
  });

  it('rejects a negative value', async () => {
    const schema = await ConfigSchema.load();
    assert.throws(
      () => finishConfig({ image: { worker_idle_seconds: -1 } }, schema, 'test'),
      (err: unknown) => err instanceof ConfigError && /image\.worker_idle_seconds/.test(err.message),
    );
  });
});

describe('config reference', () => {
  it('docs/config.md matches the schema', async () => {
    const { readFile } = await import('node:fs/promises');
    const path = await import('node:path');
    const { PROJECT_ROOT } = await import('../../src/paths.js');
    const { printConfigMarkdown } = await import('../../src/config/print.js');

    const committed = await readFile(path.join(PROJECT_ROOT, 'docs/config.md'), 'utf8');
    const generated = printConfigMarkdown((await ConfigSchema.load()).schema);
    assert.equal(committed, generated, 'regenerate it: node core/dist/src/cli.js config --markdown > docs/config.md');
  });
});
