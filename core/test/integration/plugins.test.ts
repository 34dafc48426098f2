import 'reflect-metadata';
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { TestDaemon } from '../support/daemon.js';
import { installVendorPlugin, vendorRuntimeConfig } from '../support/fixtures.js';

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function vendorDir(edit?: (manifest: Record<string, unknown>) => unknown): Promise<string> {
  const dir = await installVendorPlugin(edit);
  cleanups.push(() => rm(path.dirname(dir), { recursive: true, force: true }));
  return dir;
}

/** Starts a daemon that must fail, and returns its output. */
async function startupFailure(config: Record<string, unknown>): Promise<string> {
  const err = await TestDaemon.start({ config }).then(
    async (daemon) => {
      await daemon.cleanup();
      throw new Error('daemon started, but it should have refused the plugin');
    },
    (error: Error) => error,
  );
  return err.message;
}

describe('vendor plugin', () => {
  it('is loaded from plugin_dirs and serves its handler', async () => {
    const dir = await vendorDir();
    const daemon = await TestDaemon.start({ config: vendorRuntimeConfig(dir, { vcpus: 4 }) });
    cleanups.push(() => daemon.cleanup());

    const status = await daemon.client.runtime.Status({ verbose: true });
    assert.deepEqual(status.runtime_handlers?.map((handler) => handler.name), ['', 'vendor']);

    const handlers = JSON.parse(status.info?.handlers ?? '{}') as Record<string, { driver: string; runtime: string; vm: boolean }>;
    assert.equal(handlers.vendor?.driver, 'example');
    assert.match(handlers.vendor?.runtime ?? '', /vcpus 4/);
    assert.equal(handlers.vendor?.vm, true);

    const loaded = daemon.logRecords().find((record) => record.msg === 'plugin loaded' && record.plugin === 'example-vendor');
    assert.ok(loaded, 'the daemon logs the vendor plugin as loaded');
    assert.equal(loaded.builtin, false);
    await daemon.cleanup();
  });

  it('with a manifest missing a field stops start-up', async () => {
    const dir = await vendorDir((manifest) => {
      delete manifest.version;
      return manifest;
    });
    const message = await startupFailure(vendorRuntimeConfig(dir));
    assert.match(message, /plugin "example-vendor"/);
    assert.match(message, /berth-plugin\.json/);
    assert.match(message, /\/version: required key is missing/);
  });

  it('with an unknown provision kind stops start-up', async () => {
    const dir = await vendorDir((manifest) => {
      (manifest.provides as Record<string, unknown>[])[0]!.kind = 'storage-driver';
      return manifest;
    });
    const message = await startupFailure(vendorRuntimeConfig(dir));
    assert.match(message, /plugin "example-vendor"/);
    assert.match(message, /\/provides\/0\/kind: must be one of "runtime-driver", "network-provider", "seccomp-profile-provider"/);
  });

  it('with unparseable JSON stops start-up', async () => {
    const dir = await vendorDir(() => '{ "name": "example-vendor", ');
    const message = await startupFailure(vendorRuntimeConfig(dir));
    assert.match(message, /plugin at .*example-vendor-runtime/);
    assert.match(message, /cannot parse manifest/);
  });

  it('built for another core API stops start-up', async () => {
    const dir = await vendorDir((manifest) => ({ ...manifest, coreApi: '^2.0.0' }));
    const message = await startupFailure(vendorRuntimeConfig(dir));
    assert.match(message, /plugin "example-vendor"/);
    assert.match(message, /\/coreApi: plugin requires core API \^2\.0\.0, but this berth provides 1\.0\.0/);
  });

  it('whose entry does not exist stops start-up', async () => {
    const dir = await vendorDir((manifest) => {
      (manifest.provides as Record<string, unknown>[])[0]!.entry = './missing.js';
      return manifest;
    });
    const message = await startupFailure(vendorRuntimeConfig(dir));
    assert.match(message, /plugin "example-vendor"/);
    assert.match(message, /\/provides\/0\/entry: cannot import .*missing\.js/);
  });

  it('with invalid options stops start-up', async () => {
    const dir = await vendorDir();
    const message = await startupFailure(vendorRuntimeConfig(dir, { vcpus: 0, colour: 'blue' }));
    assert.match(message, /plugin "example-vendor"/);
    assert.match(message, /runtimes\.vendor\.options\.vcpus \(\/runtimes\/vendor\/options\/vcpus\): must be >= 1/);
    assert.match(message, /runtimes\.vendor\.options\.colour \(\/runtimes\/vendor\/options\/colour\): unknown key "colour"/);
  });

  it('named by a handler but not installed stops start-up', async () => {
    const dir = await vendorDir();
    const config = vendorRuntimeConfig(dir);
    config.runtimes = { vendor: { driver: 'exampel' } };
    const message = await startupFailure(config);
    assert.match(message, /runtimes\.vendor\.driver: no plugin provides runtime-driver "exampel" \(available: .*example.*\)/);
  });
});
