import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NetworkHarness } from './support/harness.js';
import { RECORDER_PLUGIN, isAlive } from './support/test-plugins.js';

type KindError = Error & { kind?: string; cniCode?: number };

describe('cni provider failures', () => {
  let harness: NetworkHarness;

  before(async () => {
    harness = await NetworkHarness.create();
    await harness.writePlugin('recorder', RECORDER_PLUGIN);
  });

  after(async () => {
    await harness.cleanup();
  });

  /** Asserts that nothing of sandbox `sandboxId` is left on the host: IP, veth or record. */
  async function assertNothingLeft(sandboxId: string, netnsName: string): Promise<void> {
    assert.deepEqual(await harness.allocations(), [], 'an IP stayed allocated');
    assert.deepEqual(await harness.veths(), [], 'a veth stayed on the bridge');
    const records = await readdir(harness.cacheDir).catch((): string[] => []);
    assert.ok(!records.includes(sandboxId), 'the attachment record stayed');
    const eth0 = await harness.inNetns(netnsName, ['ip', 'link', 'show', 'eth0']);
    assert.notEqual(eth0.exitCode, 0, 'eth0 stayed in the namespace');
  }

  it('reports a broken conflist and refuses pods', async () => {
    const file = await harness.writeConfig('10-test.conflist', '{ "cniVersion": "1.0.0", "name": "broken", "plugins": [');
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    const status = await provider.status();
    assert.equal(status.ready, false);
    assert.equal(status.reason, 'InvalidNetworkConfig');
    assert.match(status.message ?? '', new RegExp(`${file}: invalid JSON`));

    const skipped = harness.log.find('CNI network config skipped').filter((record) => record.file === file);
    assert.ok(skipped.length > 0, 'the skipped file was not logged');
    assert.match(String(skipped[0]!.reason), /invalid JSON/);

    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'FailedPrecondition');
      assert.match(err.message, /pod network is not ready \(InvalidNetworkConfig\)/);
      assert.match(err.message, /invalid JSON/);
      return true;
    });
    await assertNothingLeft(request.sandboxId, netns.name);
  });

  it('skips a network whose plugin binary is missing', async () => {
    const list = harness.bridgeList({ extraPlugins: [{ type: 'no-such-plugin' }] });
    await harness.writeConfig('10-test.conflist', list);
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    const status = await provider.status();
    assert.equal(status.ready, false);
    assert.match(status.message ?? '', /plugin "no-such-plugin" not found in \/usr\/lib\/cni, /);

    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'FailedPrecondition');
      assert.match(err.message, /plugin "no-such-plugin" not found/);
      return true;
    });
    await assertNothingLeft(request.sandboxId, netns.name);
  });

  it('undoes ADD when a binary vanished after loading', async () => {
    const vanishing = await harness.writePlugin('vanishing', RECORDER_PLUGIN);
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'vanishing' }] }));
    const provider = await harness.provider({ reload_interval_seconds: 3600 });
    assert.equal((await provider.status()).ready, true);
    await rm(vanishing);
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'FailedPrecondition');
      assert.match(err.message, /CNI plugin "vanishing" \(network "testnet", ADD, sandbox [0-9a-f]{64}\): binary "vanishing" not found in/);
      assert.match(err.message, /plugins\.cni\.bin_dirs/);
      return true;
    });
    await assertNothingLeft(request.sandboxId, netns.name);
    assert.ok(harness.log.find('CNI DEL skipped a plugin that is not installed').length > 0);
  });

  it('surfaces the message and code of a failing plugin', async () => {
    const recordFile = path.join(harness.dir, 'fail-add.jsonl');
    await harness.writeConfig(
      '10-test.conflist',
      harness.bridgeList({
        portmap: true,
        extraPlugins: [{ type: 'recorder', recordFile, failOn: 'ADD', errorCode: 107, errorMsg: 'widget pool exhausted', errorDetails: 'all 0 widgets in use' }],
      }),
    );
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, {
      portMappings: [{ protocol: 'tcp', containerPort: 80, hostPort: 39_999, hostIp: '' }],
    });

    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'Internal');
      assert.equal(err.cniCode, 107);
      assert.equal(
        err.message,
        `CNI plugin "recorder" (network "testnet", ADD, sandbox ${request.sandboxId}) failed: widget pool exhausted: all 0 widgets in use (CNI error code 107, plugin-specific error)`,
      );
      return true;
    });
    await assertNothingLeft(request.sandboxId, netns.name);

    const calls = (await readFile(recordFile, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { command: string });
    assert.deepEqual(calls.map((call) => call.command), ['ADD', 'DEL']);
  });

  it('maps CNI error code 11 to Unavailable', async () => {
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'recorder', failOn: 'ADD', errorCode: 11, errorMsg: 'datastore busy' }] }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'Unavailable');
      assert.match(err.message, /datastore busy \(CNI error code 11, try again later\)/);
      return true;
    });
    await assertNothingLeft(request.sandboxId, netns.name);
  });

  it('reports an exhausted host-local range', async () => {
    // In a /30, host-local hands out one address: the other is the bridge's gateway.
    const subnet = `${harness.prefix}.248/30`;
    const bridge = harness.extraBridge();
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ subnet, bridge }));
    const provider = await harness.provider();
    const firstNetns = await harness.netns();
    const secondNetns = await harness.netns();
    const first = harness.request(firstNetns.path);
    const second = harness.request(secondNetns.path);

    const [ip] = await harness.setUp(provider, first);
    await assert.rejects(harness.setUp(provider, second), (err: KindError) => {
      assert.match(err.message, /CNI plugin "bridge" \(network "testnet", ADD, sandbox [0-9a-f]{64}\) failed: .*no IP addresses available in range set/);
      return true;
    });

    assert.deepEqual(await harness.allocations(), [ip]);
    assert.equal((await harness.veths(bridge)).length, 1, 'the failed pod left a veth');
    await harness.tearDown(provider, first);
    await assertNothingLeft(second.sandboxId, secondNetns.name);
  });

  it('kills a plugin that times out, with its children', async () => {
    const pidFile = path.join(harness.dir, 'hang.pids');
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'recorder', hangOn: 'ADD', pidFile }] }));
    const provider = await harness.provider({ plugin_timeout_seconds: 1 });
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    const started = Date.now();
    await assert.rejects(harness.setUp(provider, request), (err: KindError) => {
      assert.equal(err.kind, 'DeadlineExceeded');
      assert.match(err.message, /CNI plugin "recorder" \(network "testnet", ADD, sandbox [0-9a-f]{64}\) timed out after 1 s and was killed/);
      return true;
    });
    assert.ok(Date.now() - started < 10_000, 'the timeout did not end the call');

    const pids = JSON.parse(await readFile(pidFile, 'utf8')) as number[];
    assert.equal(pids.length, 2);
    for (let attempt = 0; attempt < 20 && (await isAlive(pids[1]!)); attempt++) await sleep(100);
    assert.equal(await isAlive(pids[0]!), false, 'the plugin process survived');
    assert.equal(await isAlive(pids[1]!), false, 'the plugin\'s child process survived');
    await assertNothingLeft(request.sandboxId, netns.name);
  });

  it('rejects a plugin result that is not JSON', async () => {
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'recorder', garbageOn: 'ADD' }] }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await assert.rejects(harness.setUp(provider, request), /CNI plugin "recorder" .* printed output that is not JSON/);
    await assertNothingLeft(request.sandboxId, netns.name);
  });

  it('keeps the record of a failed DEL for a retry', async () => {
    const failFlagFile = path.join(harness.dir, 'fail-del');
    await writeFile(failFlagFile, '');
    await harness.writeConfig('10-test.conflist', harness.bridgeList({ extraPlugins: [{ type: 'recorder', failOn: 'DEL', failFlagFile, errorCode: 5, errorMsg: 'disk on fire' }] }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    await assert.rejects(provider.tearDown(request), /disk on fire \(CNI error code 5, I\/O failure\)/);
    assert.ok((await readdir(harness.cacheDir)).includes(request.sandboxId), 'the record of the failed DEL is gone');
    assert.deepEqual(await harness.allocations(), [], 'bridge DEL did not run after the recorder failed');

    await rm(failFlagFile);
    await harness.tearDown(provider, request);
    await assertNothingLeft(request.sandboxId, netns.name);
  });
});
