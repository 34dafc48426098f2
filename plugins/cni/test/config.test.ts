import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NetworkStatus } from '@berth/core';
import { NetworkHarness, SYSTEM_BIN_DIR } from './support/harness.js';
import { oldPlugin } from './support/test-plugins.js';
import type { CniNetworkProvider } from '../src/provider.js';

/** Polls the provider's status until `accept` returns true or 5 s pass, and returns the last status. */
async function waitForStatus(provider: CniNetworkProvider, accept: (status: NetworkStatus) => boolean): Promise<NetworkStatus> {
  let status = await provider.status();
  for (let attempt = 0; attempt < 50 && !accept(status); attempt++) {
    await sleep(100);
    status = await provider.status();
  }
  return status;
}

describe('cni network configs', () => {
  let harness: NetworkHarness;

  beforeEach(async () => {
    harness = await NetworkHarness.create();
  });

  afterEach(async () => {
    await harness.cleanup();
  });

  it('reports NoNetworkConfig while the directory is missing', async () => {
    await rm(harness.confDir, { recursive: true });
    const provider = await harness.provider();
    const netns = await harness.netns();

    const status = await provider.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, 'NoNetworkConfig');
    assert.match(status.message ?? '', new RegExp(`no CNI network config found in ${harness.confDir} \\(missing: ${harness.confDir}\\)`));

    await assert.rejects(harness.setUp(provider, harness.request(netns.path)), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'FailedPrecondition');
      assert.match(err.message, /pod network is not ready \(NoNetworkConfig\)/);
      return true;
    });
  });

  it('picks up a network installed after start-up', async () => {
    await rm(harness.confDir, { recursive: true });
    // A poll interval far beyond the test: only the directory watch can see the file in time.
    const provider = await harness.provider({ reload_interval_seconds: 3600 });
    assert.equal((await provider.status()).reason, 'NoNetworkConfig');

    await mkdir(harness.confDir);
    await harness.writeBridgeList();
    const status = await waitForStatus(provider, (current) => current.ready);
    assert.equal(status.ready, true, `status stayed ${JSON.stringify(status)}`);

    const netns = await harness.netns();
    const request = harness.request(netns.path);
    const [ip] = await harness.setUp(provider, request);
    assert.ok(ip!.startsWith(`${harness.prefix}.`));
    await harness.tearDown(provider, request);
  });

  it('sees a new file through the directory watch', async () => {
    const provider = await harness.provider({ reload_interval_seconds: 3600 });
    await provider.status();
    await harness.writeBridgeList({ name: 'late' });

    // status() itself re-reads; setUp must see the watch's reload without calling it.
    let network = '';
    for (let attempt = 0; attempt < 50 && network === ''; attempt++) {
      await sleep(100);
      network = String(harness.log.find('CNI network configs loaded').at(-1)?.default_network ?? '');
    }
    assert.equal(network, 'late');
  });

  it('goes not ready when the last config is removed', async () => {
    const file = await harness.writeBridgeList();
    const provider = await harness.provider();
    assert.equal((await provider.status()).ready, true);

    await rm(file);
    const status = await waitForStatus(provider, (current) => !current.ready);
    assert.equal(status.reason, 'NoNetworkConfig');
  });

  it('skips invalid files with a logged reason', async () => {
    const cases: [string, string | Record<string, unknown>, RegExp][] = [
      ['01-json.conflist', '{"cniVersion": ', /invalid JSON/],
      ['02-array.conflist', '[]', /must be a JSON object/],
      ['03-version.conflist', { cniVersion: '0.2.0', name: 'v', plugins: [{ type: 'bridge' }] }, /"cniVersion" "0\.2\.0" is not supported \(supported: 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0\)/],
      ['04-noversion.conflist', { name: 'nv', plugins: [{ type: 'bridge' }] }, /"cniVersion" is missing/],
      ['05-noname.conflist', { cniVersion: '1.0.0', plugins: [{ type: 'bridge' }] }, /"name" is missing/],
      ['06-badname.conflist', { cniVersion: '1.0.0', name: 'has space', plugins: [{ type: 'bridge' }] }, /"name" "has space" may contain only/],
      ['07-empty.conflist', { cniVersion: '1.0.0', name: 'empty', plugins: [] }, /"plugins" must be a non-empty array/],
      ['08-path.conflist', { cniVersion: '1.0.0', name: 'path', plugins: [{ type: '../../bin/sh' }] }, /plugins\[0\]\.type "\.\.\/\.\.\/bin\/sh" must be a plain file name/],
      ['09-notype.conflist', { cniVersion: '1.0.0', name: 'notype', plugins: [{ bridge: 'x' }] }, /plugins\[0\]\.type is missing/],
      ['10-list.conf', { cniVersion: '1.0.0', name: 'listconf', plugins: [{ type: 'bridge' }] }, /rename it to \.conflist/],
      ['11-single.conflist', { cniVersion: '1.0.0', name: 'single', type: 'bridge' }, /a \.conflist file needs a "plugins" array/],
      ['12-ipam.conflist', { cniVersion: '1.0.0', name: 'ipam', plugins: [{ type: 'bridge', ipam: { type: 'no-such-ipam' } }] }, /plugin "no-such-ipam" not found/],
      ['13-check.conflist', { cniVersion: '1.0.0', name: 'check', disableCheck: 'maybe', plugins: [{ type: 'bridge' }] }, /"disableCheck" must be a boolean/],
    ];
    for (const [name, body] of cases) await harness.writeConfig(name, body);
    await harness.writeConfig('50-dup-a.conflist', harness.bridgeList({ name: 'dup' }));
    await harness.writeConfig('51-dup-b.conflist', harness.bridgeList({ name: 'dup' }));
    await harness.writeConfig('README.md', 'not a config');

    const provider = await harness.provider();
    const status = await provider.status();
    assert.equal(status.ready, true, `status: ${JSON.stringify(status)}`);

    const skipped = harness.log.find('CNI network config skipped');
    for (const [name, , reason] of cases) {
      const record = skipped.find((entry) => entry.file === path.join(harness.confDir, name));
      assert.ok(record, `${name} was not logged as skipped`);
      assert.match(String(record.reason), reason, `${name}: ${String(record.reason)}`);
    }
    const duplicate = skipped.find((entry) => entry.file === path.join(harness.confDir, '51-dup-b.conflist'));
    assert.match(String(duplicate?.reason), /network name "dup" is already used by .*50-dup-a\.conflist/);
    assert.equal(skipped.filter((entry) => String(entry.file).endsWith('README.md')).length, 0);

    const loaded = harness.log.find('CNI network configs loaded').at(-1);
    assert.equal(loaded?.default_network, 'dup');
  });

  it('takes the first valid file in lexical order as default', async () => {
    await harness.writeConfig('20-second.conflist', harness.bridgeList({ name: 'second' }));
    await harness.writeConfig('10-first.conf', { ...(harness.bridgeList().plugins as Record<string, unknown>[])[0], cniVersion: '0.4.0', name: 'first' });
    await harness.writeConfig('05-broken.conflist', '{');
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const [record] = harness.log.find('CNI ADD of the pod finished').filter((entry) => entry.sandbox_id === request.sandboxId);
    assert.equal(record?.network, 'first');
    await harness.tearDown(provider, request);
    assert.deepEqual(await harness.allocations('first'), []);
  });

  it('follows default_network when set', async () => {
    await harness.writeConfig('10-first.conflist', harness.bridgeList({ name: 'first' }));
    await harness.writeConfig('20-second.conflist', harness.bridgeList({ name: 'second' }));
    const provider = await harness.provider({ default_network: 'second' });
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const [record] = harness.log.find('CNI ADD of the pod finished').filter((entry) => entry.sandbox_id === request.sandboxId);
    assert.equal(record?.network, 'second');
    await harness.tearDown(provider, request);

    const missing = await harness.provider({ default_network: 'third' });
    const status = await missing.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, 'DefaultNetworkNotFound');
    assert.match(status.message ?? '', /plugins\.cni\.default_network "third" is not among the valid networks .* \(valid: first, second\)/);
  });

  it('skips a network whose plugin lacks its cniVersion', async () => {
    await harness.writePlugin('oldie', oldPlugin(['0.3.0', '0.3.1']));
    await harness.writeConfig('10-new.conflist', { cniVersion: '1.0.0', name: 'new', plugins: [{ type: 'oldie' }] });
    const provider = await harness.provider();

    const status = await provider.status();
    assert.equal(status.ready, false);
    assert.match(status.message ?? '', /plugin "oldie" does not support cniVersion 1\.0\.0 \(it supports 0\.3\.0, 0\.3\.1\)/);
  });

  it('reports a missing loopback plugin', async () => {
    // A bin directory with everything the bridge list needs, but no loopback.
    const binDir = path.join(harness.dir, 'no-loopback');
    await mkdir(binDir);
    for (const plugin of ['bridge', 'host-local']) await symlink(path.join(SYSTEM_BIN_DIR, plugin), path.join(binDir, plugin));
    await harness.writeBridgeList();

    const provider = await harness.provider({ bin_dirs: [binDir] });
    const status = await provider.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, 'LoopbackPluginNotFound');

    const withoutLoopback = await harness.provider({ bin_dirs: [binDir], loopback: false });
    assert.equal((await withoutLoopback.status()).ready, true);
  });

  it('keeps the loopback step out when the list has it', async () => {
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'loopback' }] }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const lo = await harness.inNetns(netns.name, ['ip', '-o', 'link', 'show', 'lo']);
    assert.match(lo.stdout, /state UNKNOWN|,UP/);
    const adds = harness.log.find('CNI ADD finished').filter((entry) => entry.sandbox_id === request.sandboxId);
    assert.deepEqual(adds.map((entry) => entry.network), ['testnet']);
    await harness.tearDown(provider, request);
  });
});
