import 'reflect-metadata';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestDaemon } from '../support/daemon.js';
import { installVendorPlugin, vendorRuntimeConfig } from '../support/fixtures.js';
import type { RuntimeCondition__Output } from '../../src/cri/generated/runtime/v1/RuntimeCondition.js';

let pluginDir: string;
let workDir: string;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  pluginDir = await installVendorPlugin();
  workDir = await mkdtemp(path.join(os.tmpdir(), 'berth-network-status-'));
  cleanups.push(() => rm(path.dirname(pluginDir), { recursive: true, force: true }));
  cleanups.push(() => rm(workDir, { recursive: true, force: true }));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Config of a daemon that serves the vendor handler and the cni provider on `confDir`. */
function cniConfig(confDir: string, options: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...vendorRuntimeConfig(pluginDir),
    network: { provider: 'cni' },
    plugins: { cni: { conf_dirs: [confDir], reload_interval_seconds: 1, ...options } },
  };
}

async function networkReady(daemon: TestDaemon): Promise<RuntimeCondition__Output | undefined> {
  const status = await daemon.client.runtime.Status({});
  return status.status?.conditions?.find((condition) => condition.type === 'NetworkReady') as RuntimeCondition__Output | undefined;
}

describe('NetworkReady with the cni provider', () => {
  it('follows the config directory', async () => {
    const confDir = path.join(workDir, 'follow');
    const daemon = await TestDaemon.start({ config: cniConfig(confDir) });
    cleanups.push(() => daemon.cleanup());

    const missing = await networkReady(daemon);
    assert.equal(missing?.status, false);
    assert.equal(missing?.reason, 'NoNetworkConfig');
    assert.match(missing?.message ?? '', new RegExp(`no CNI network config found in ${confDir}`));

    await mkdir(confDir);
    await writeFile(path.join(confDir, '10-broken.conflist'), '{"cniVersion": "1.0.0", "name": "broken", "plugins": [}');
    let condition = await networkReady(daemon);
    assert.equal(condition?.status, false);
    assert.equal(condition?.reason, 'InvalidNetworkConfig');
    assert.match(condition?.message ?? '', /10-broken\.conflist: invalid JSON/);
    await daemon.waitForLog((record) => record.msg === 'CNI network config skipped' && String(record.file).endsWith('10-broken.conflist'));

    await writeFile(
      path.join(confDir, '20-good.conflist'),
      JSON.stringify({ cniVersion: '1.0.0', name: 'good', plugins: [{ type: 'loopback' }] }),
    );
    for (let attempt = 0; attempt < 50 && condition?.status !== true; attempt++) {
      await sleep(100);
      condition = await networkReady(daemon);
    }
    assert.equal(condition?.status, true, `NetworkReady stayed ${JSON.stringify(condition)}`);
    assert.equal(condition?.reason, '');
  });

  it('stops start-up on invalid options', async () => {
    const confDir = path.join(workDir, 'invalid');
    const failure = await TestDaemon.start({ config: cniConfig(confDir, { conf_dir: ['/etc/cni/net.d'], plugin_timeout_seconds: 0 }) }).then(
      async (daemon) => {
        await daemon.cleanup();
        throw new Error('daemon started with invalid cni options');
      },
      (error: Error) => error.message,
    );
    assert.match(failure, /invalid options for network-provider "cni"/);
    assert.match(failure, /plugins\.cni\.conf_dir \(\/plugins\/cni\/conf_dir\): unknown key "conf_dir"/);
    assert.match(failure, /plugins\.cni\.plugin_timeout_seconds \(\/plugins\/cni\/plugin_timeout_seconds\): must be >= 1/);
  });

  it('reports the provider in verbose Status', async () => {
    const daemon = await TestDaemon.start({ config: cniConfig(path.join(workDir, 'verbose')) });
    cleanups.push(() => daemon.cleanup());

    const status = await daemon.client.runtime.Status({ verbose: true });
    const config = JSON.parse(status.info?.config ?? '{}') as Record<string, unknown>;
    assert.equal(config.network_provider, 'cni');
    const started = daemon.logRecords().find((record) => record.msg === 'CNI network provider started');
    assert.ok(started, 'the provider did not log its start');
    assert.deepEqual(started.conf_dirs, [path.join(workDir, 'verbose')]);
  });
});
