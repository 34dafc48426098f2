import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { NetworkHarness, SYSTEM_BIN_DIR } from './support/harness.js';
import { RECORDER_PLUGIN, readRecords } from './support/test-plugins.js';

describe('cni plugin protocol', () => {
  let harness: NetworkHarness;
  let recordCount = 0;

  before(async () => {
    harness = await NetworkHarness.create();
    await harness.writePlugin('recorder', RECORDER_PLUGIN);
  });

  after(async () => {
    await harness.cleanup();
  });

  function newRecordFile(): string {
    recordCount += 1;
    return path.join(harness.dir, `calls-${recordCount}.jsonl`);
  }

  it('passes the CNI environment, capabilities and prevResult', async () => {
    const recordFile = newRecordFile();
    await harness.writeConfig(
      '10-test.conflist',
      harness.bridgeList({
        extraPlugins: [
          { type: 'recorder', recordFile, capabilities: { portMappings: true } },
          { type: 'recorder', recordFile, capabilities: { dns: true, bandwidth: false } },
        ],
      }),
    );
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, {
      podName: 'web-0',
      podNamespace: 'shop',
      podUid: '6f1c7c0e-9f6a-4c43-9d55-1f1f0c8d2a11',
      portMappings: [
        { protocol: 'tcp', containerPort: 80, hostPort: 38_080, hostIp: '' },
        { protocol: 'udp', containerPort: 53, hostPort: 38_053, hostIp: '127.0.0.1' },
        { protocol: 'tcp', containerPort: 9090, hostPort: 0, hostIp: '' },
      ],
      annotations: { 'kubernetes.io/ingress-bandwidth': '10M' },
      dns: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
    });

    const [ip] = await harness.setUp(provider, request);
    const adds = (await readRecords(recordFile)).filter((call) => call.command === 'ADD');
    assert.equal(adds.length, 2);

    const env = adds[0]!.env;
    assert.equal(env.CNI_COMMAND, 'ADD');
    assert.equal(env.CNI_CONTAINERID, request.sandboxId);
    assert.equal(env.CNI_NETNS, netns.path);
    assert.equal(env.CNI_IFNAME, 'eth0');
    assert.equal(env.CNI_PATH, `${SYSTEM_BIN_DIR}:${harness.binDir}`);
    assert.deepEqual(env.CNI_ARGS!.split(';').sort(), [
      'IgnoreUnknown=1',
      `K8S_POD_INFRA_CONTAINER_ID=${request.sandboxId}`,
      'K8S_POD_NAME=web-0',
      'K8S_POD_NAMESPACE=shop',
      'K8S_POD_UID=6f1c7c0e-9f6a-4c43-9d55-1f1f0c8d2a11',
    ]);

    const first = adds[0]!.conf;
    assert.equal(first.name, 'testnet');
    assert.equal(first.cniVersion, '1.0.0');
    assert.deepEqual(first.runtimeConfig, {
      portMappings: [
        { hostPort: 38_080, containerPort: 80, protocol: 'tcp' },
        { hostPort: 38_053, containerPort: 53, protocol: 'udp', hostIP: '127.0.0.1' },
      ],
    });
    const prevResult = first.prevResult as { ips: { address: string }[] };
    assert.equal(prevResult.ips[0]!.address, `${ip}/24`, 'the bridge result was not passed on as prevResult');

    const second = adds[1]!.conf;
    assert.deepEqual(second.runtimeConfig, {
      dns: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
    });

    const ignored = harness.log.find('no plugin of the network declares that capability');
    assert.ok(ignored.some((record) => record.capability === 'bandwidth' && record.sandbox_id === request.sandboxId));

    await harness.tearDown(provider, request);
    const dels = (await readRecords(recordFile)).filter((call) => call.command === 'DEL');
    assert.equal(dels.length, 2);
    assert.deepEqual(dels[0]!.conf.runtimeConfig, second.runtimeConfig, 'DEL did not run in reverse order');
    assert.deepEqual(dels[0]!.conf.prevResult, prevResult, 'DEL did not get the cached result');
    assert.equal(dels[0]!.env.CNI_COMMAND, 'DEL');
    assert.equal(dels[0]!.env.CNI_NETNS, netns.path);
  });

  it('sends no prevResult on DEL for 0.3.1', async () => {
    const recordFile = newRecordFile();
    await harness.writeConfig('10-test.conflist', { cniVersion: '0.3.1', name: 'old', plugins: [{ type: 'recorder', recordFile }] });
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    await provider.check(request);
    await harness.tearDown(provider, request);

    const calls = await readRecords(recordFile);
    assert.deepEqual(calls.map((call) => call.command), ['ADD', 'DEL'], 'CHECK ran for a 0.3.1 network');
    assert.equal(calls[0]!.conf.cniVersion, '0.3.1');
    assert.equal(calls[1]!.conf.prevResult, undefined);
  });

  it('runs CHECK with the cached result unless disabled', async () => {
    const recordFile = newRecordFile();
    await harness.writeConfig('10-test.conflist', { cniVersion: '1.0.0', name: 'checked', plugins: [{ type: 'recorder', recordFile }] });
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    await provider.check(request);
    const checks = (await readRecords(recordFile)).filter((call) => call.command === 'CHECK');
    assert.equal(checks.length, 1);
    assert.deepEqual(checks[0]!.conf.prevResult, { cniVersion: '1.0.0', interfaces: [], ips: [] });
    await harness.tearDown(provider, request);

    const quietFile = newRecordFile();
    await harness.writeConfig('10-test.conflist', { cniVersion: '1.0.0', name: 'unchecked', disableCheck: true, plugins: [{ type: 'recorder', recordFile: quietFile }] });
    const quiet = await harness.provider();
    const quietRequest = harness.request(netns.path);
    await harness.setUp(quiet, quietRequest);
    await quiet.check(quietRequest);
    assert.deepEqual((await readRecords(quietFile)).map((call) => call.command), ['ADD']);
    await harness.tearDown(quiet, quietRequest);
  });

  it('runs DEL for a sandbox without a record', async () => {
    const recordFile = newRecordFile();
    await harness.writeConfig('10-test.conflist', { cniVersion: '1.0.0', name: 'plain', plugins: [{ type: 'recorder', recordFile }] });
    const provider = await harness.provider();
    const request = harness.request('/run/netns/berth-cni-gone');

    await provider.tearDown(request);
    const calls = await readRecords(recordFile);
    assert.deepEqual(calls.map((call) => call.command), ['DEL']);
    assert.equal(calls[0]!.env.CNI_NETNS, '', 'a missing namespace must be passed as an empty CNI_NETNS');
    assert.equal(calls[0]!.env.CNI_CONTAINERID, request.sandboxId);
  });

  it('releases the earlier attachment when a sandbox is set up again', async () => {
    await harness.writeBridgeList();
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const [ip] = await harness.setUp(provider, request);

    assert.deepEqual(await harness.allocations(), [ip]);
    assert.ok(harness.log.find('releasing CNI attachments left by an earlier set-up').length > 0);
    await harness.tearDown(provider, request);
    assert.deepEqual(await harness.allocations(), []);
  });

  it('rejects a sandbox id that cannot be a container id', async () => {
    await harness.writeBridgeList();
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, { sandboxId: '../escape' });

    await assert.rejects(provider.setUp(request), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'InvalidArgument');
      assert.match(err.message, /pod sandbox id "\.\.\/escape" cannot be a CNI container id/);
      return true;
    });
    await assert.rejects(provider.tearDown(request), /cannot be a CNI container id/);
  });
});
