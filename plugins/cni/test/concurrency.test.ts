import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv4 } from 'node:net';
import { NetworkHarness } from './support/harness.js';

const PODS = 50;

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!;
}

describe('cni provider under concurrency', () => {
  let harness: NetworkHarness;

  before(async () => {
    harness = await NetworkHarness.create();
    await harness.writeBridgeList({ portmap: true });
  });

  after(async () => {
    await harness.cleanup();
  });

  it(`gives ${PODS} concurrent pods unique IPs`, async (t) => {
    const provider = await harness.provider();
    const namespaces = await Promise.all(Array.from({ length: PODS }, () => harness.netns()));
    const requests = namespaces.map((netns) => harness.request(netns.path));

    const started = performance.now();
    const results = await Promise.allSettled(requests.map((request) => harness.setUp(provider, request)));
    const setUpMs = performance.now() - started;

    const failures = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
    assert.deepEqual(failures.map((failure) => String(failure.reason)), []);
    const ips = results.map((result) => (result as PromiseFulfilledResult<string[]>).value[0]!);
    assert.ok(ips.every((ip) => isIPv4(ip) && ip.startsWith(`${harness.prefix}.`)), `addresses outside ${harness.subnet}: ${ips.join(', ')}`);
    assert.equal(new Set(ips).size, PODS, `duplicate addresses: ${ips.sort().join(', ')}`);
    assert.deepEqual(await harness.allocations(), [...ips].sort());
    assert.equal((await harness.veths()).length, PODS);

    // Each pod reaches another one, so the concurrent ADDs wired working interfaces.
    for (let index = 0; index < PODS; index += 10) {
      const peer = ips[(index + 1) % PODS]!;
      const ping = await harness.inNetns(namespaces[index]!.name, ['busybox', 'ping', '-c', '1', '-W', '2', peer]);
      assert.equal(ping.exitCode, 0, `pod ${index} cannot reach ${peer}: ${ping.stdout}`);
    }

    const durations = harness.log
      .find('CNI ADD of the pod finished')
      .map((record) => record.duration_ms as number)
      .sort((a, b) => a - b);
    t.diagnostic(
      `${PODS} concurrent set-ups: ${Math.round(setUpMs)} ms in all; per pod p50 ${percentile(durations, 0.5)} ms, p90 ${percentile(durations, 0.9)} ms, max ${durations.at(-1)} ms`,
    );

    const tornDown = performance.now();
    await Promise.all(requests.map((request) => harness.tearDown(provider, request)));
    t.diagnostic(`${PODS} concurrent tear-downs: ${Math.round(performance.now() - tornDown)} ms in all`);

    assert.deepEqual(await harness.allocations(), []);
    assert.deepEqual(await harness.veths(), []);
  });
});
