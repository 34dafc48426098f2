import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { isIPv4, isIPv6 } from 'node:net';
import { execa } from 'execa';
import { NetworkHarness } from './support/harness.js';

/** Returns a TCP port that was free on the host a moment ago. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Fetches a URL from the host with a short timeout; returns the body or the error message. */
async function fetchText(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return await response.text();
  } catch (err) {
    return `fetch failed: ${(err as Error).message}; cause: ${String((err as { cause?: unknown }).cause)}`;
  }
}

describe('cni provider in real namespaces', () => {
  let harness: NetworkHarness;

  before(async () => {
    harness = await NetworkHarness.create();
    await harness.writeBridgeList({ portmap: true });
  });

  after(async () => {
    await harness.cleanup();
  });

  it('gives two pods distinct IPs that reach each other', async () => {
    const provider = await harness.provider();
    const first = await harness.netns();
    const second = await harness.netns();
    const firstRequest = harness.request(first.path);
    const secondRequest = harness.request(second.path);

    const firstIps = await harness.setUp(provider, firstRequest);
    const secondIps = await harness.setUp(provider, secondRequest);

    assert.equal(firstIps.length, 1);
    assert.equal(secondIps.length, 1);
    assert.ok(firstIps[0]!.startsWith(`${harness.prefix}.`), `${firstIps[0]} is not in ${harness.subnet}`);
    assert.ok(secondIps[0]!.startsWith(`${harness.prefix}.`), `${secondIps[0]} is not in ${harness.subnet}`);
    assert.notEqual(firstIps[0], secondIps[0]);

    const eth0 = await harness.inNetns(first.name, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    assert.match(eth0.stdout, new RegExp(`inet ${firstIps[0]!.replaceAll('.', '\\.')}/24`));

    const ping = await harness.inNetns(first.name, ['busybox', 'ping', '-c', '1', '-W', '2', secondIps[0]!]);
    assert.equal(ping.exitCode, 0, `ping from the first pod to ${secondIps[0]} failed: ${ping.stdout} ${ping.stderr}`);

    await harness.startHttpServer(second.name, 8080, 'served from the second pod');
    assert.equal(await harness.httpGet(first.name, secondIps[0]!, 8080), 'served from the second pod');

    await harness.tearDown(provider, firstRequest);
    await harness.tearDown(provider, secondRequest);
  });

  it('brings up the pod loopback interface', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const lo = await harness.inNetns(netns.name, ['ip', '-o', 'addr', 'show', 'dev', 'lo']);
    assert.match(lo.stdout, /inet 127\.0\.0\.1\/8/);
    const ping = await harness.inNetns(netns.name, ['busybox', 'ping', '-c', '1', '-W', '2', '127.0.0.1']);
    assert.equal(ping.exitCode, 0);

    await harness.tearDown(provider, request);
  });

  it('maps a hostPort to the pod from host loopback', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const hostPort = await freePort();
    const request = harness.request(netns.path, {
      portMappings: [{ protocol: 'tcp', containerPort: 8081, hostPort, hostIp: '' }],
    });

    const [ip] = await harness.setUp(provider, request);
    await harness.startHttpServer(netns.name, 8081, 'reached through portmap');

    assert.equal(await fetchText(`http://127.0.0.1:${hostPort}/index.html`), 'reached through portmap');
    assert.equal(await fetchText(`http://${ip}:8081/index.html`), 'reached through portmap');
    // Hairpin: the pod reaches itself through its own hostPort on the bridge's gateway address.
    assert.equal(await harness.httpGet(netns.name, `${harness.prefix}.1`, hostPort), 'reached through portmap');

    const dnat = await execa('iptables', ['-t', 'nat', '-S'], { reject: false });
    assert.match(dnat.stdout, new RegExp(`--dport ${hostPort} -j DNAT --to-destination ${ip!.replaceAll('.', '\\.')}:8081`));

    await harness.tearDown(provider, request);
    const after = await execa('iptables', ['-t', 'nat', '-S'], { reject: false });
    assert.doesNotMatch(after.stdout, new RegExp(`--dport ${hostPort} -j DNAT`), 'the DNAT rule outlived DEL');
    assert.match(await fetchText(`http://127.0.0.1:${hostPort}/`), /fetch failed/);
  });

  it('releases the IP and the veth on tear-down', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);
    const allocationsBefore = await harness.allocations();
    const vethsBefore = await harness.veths();

    const [ip] = await harness.setUp(provider, request);
    assert.deepEqual(await harness.allocations(), [...allocationsBefore, ip!].sort());
    assert.equal((await harness.veths()).length, vethsBefore.length + 1);

    await harness.tearDown(provider, request);
    assert.deepEqual(await harness.allocations(), allocationsBefore);
    assert.deepEqual(await harness.veths(), vethsBefore);
    const eth0 = await harness.inNetns(netns.name, ['ip', 'link', 'show', 'eth0']);
    assert.notEqual(eth0.exitCode, 0, 'eth0 still exists in the namespace after DEL');
    assert.ok(!(await readdir(harness.cacheDir)).includes(request.sandboxId), 'the attachment record outlived DEL');
  });

  it('tears down twice and after the netns is gone', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);
    const allocationsBefore = await harness.allocations();

    const [ip] = await harness.setUp(provider, request);
    assert.ok((await harness.allocations()).includes(ip!));
    await harness.deleteNetns(netns.name);

    await harness.tearDown(provider, request);
    assert.deepEqual(await harness.allocations(), allocationsBefore);
    await provider.tearDown(request);
    await provider.tearDown(harness.request('/run/netns/never-existed'));

    const dels = harness.log.find('CNI DEL finished').filter((record) => record.sandbox_id === request.sandboxId);
    assert.ok(dels.length >= 1);
    assert.equal(dels[0]!.netns_present, false);
  });

  it('cleans up after a restart between ADD and DEL', async (t) => {
    const first = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, {
      portMappings: [{ protocol: 'tcp', containerPort: 80, hostPort: await freePort(), hostIp: '' }],
    });
    const allocationsBefore = await harness.allocations();
    const vethsBefore = await harness.veths();

    const [ip] = await harness.setUp(first, request);
    await first.close();

    // The config on disk changes meanwhile; DEL must still use what ADD used.
    await harness.writeBridgeList({ name: 'renamed', portmap: false });
    t.after(() => harness.writeBridgeList({ portmap: true }));
    const second = await harness.provider();
    await harness.tearDown(second, request);

    assert.deepEqual(await harness.allocations(), allocationsBefore, `${ip} is still allocated`);
    assert.deepEqual(await harness.veths(), vethsBefore);
    const nat = await execa('iptables', ['-t', 'nat', '-S'], { reject: false });
    assert.doesNotMatch(nat.stdout, new RegExp(`${ip!.replaceAll('.', '\\.')}:80`));
  });

  it('runs CHECK against the cached result', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    await provider.check(request);

    await harness.inNetns(netns.name, ['ip', 'link', 'delete', 'eth0']);
    await assert.rejects(provider.check(request), (err: Error) => {
      assert.match(err.message, /CNI plugin "bridge" \(network "testnet", CHECK/);
      return true;
    });

    await harness.tearDown(provider, request);
    await assert.rejects(provider.check(request), /no CNI attachment is recorded/);
  });

  it('reports dual-stack addresses with IPv4 first', async (t) => {
    const file = await harness.writeBridgeList({ fileName: '05-dual.conflist', name: 'dualnet', dualStack: true });
    t.after(() => rm(file, { force: true }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    const ips = await harness.setUp(provider, request);
    assert.equal(ips.length, 2, `expected one IPv4 and one IPv6 address, got ${ips.join(', ')}`);
    assert.ok(isIPv4(ips[0]!), `${ips[0]} is not IPv4`);
    assert.ok(isIPv6(ips[1]!), `${ips[1]} is not IPv6`);
    assert.ok(ips[1]!.startsWith(harness.v6Subnet.split('::')[0]!), `${ips[1]} is not in ${harness.v6Subnet}`);

    await harness.tearDown(provider, request);
    assert.deepEqual(await harness.allocations('dualnet'), []);
  });

  it('applies bandwidth annotations through the bandwidth plugin', async (t) => {
    const file = await harness.writeBridgeList({ fileName: '06-shaped.conflist', name: 'shaped', bandwidth: true });
    t.after(() => rm(file, { force: true }));
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, {
      annotations: { 'kubernetes.io/ingress-bandwidth': '2M', 'kubernetes.io/egress-bandwidth': '3M' },
    });

    await harness.setUp(provider, request);
    const veth = await harness.hostVeth(netns.name);
    const qdisc = await execa('tc', ['qdisc', 'show', 'dev', veth]);
    assert.match(qdisc.stdout, /tbf .*rate 2Mbit/, `no 2Mbit ingress limit on ${veth}: ${qdisc.stdout}`);
    const all = await execa('tc', ['qdisc', 'show']);
    assert.match(all.stdout, /tbf .*rate 3Mbit/, 'no 3Mbit egress limit on the ifb device');

    await harness.tearDown(provider, request);
    const afterDel = await execa('tc', ['qdisc', 'show']);
    assert.doesNotMatch(afterDel.stdout, /rate 3Mbit/, 'the egress ifb device outlived DEL');
  });

  it('rejects a bandwidth annotation that is not a quantity', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path, { annotations: { 'kubernetes.io/ingress-bandwidth': 'fast' } });
    const allocationsBefore = await harness.allocations();

    await assert.rejects(harness.setUp(provider, request), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'InvalidArgument');
      assert.match(err.message, /annotation kubernetes\.io\/ingress-bandwidth: "fast" is not a quantity/);
      return true;
    });
    assert.deepEqual(await harness.allocations(), allocationsBefore);
  });

  it('rejects a path that is not a network namespace', async () => {
    const provider = await harness.provider();
    const request = harness.request(harness.dir);

    await assert.rejects(harness.setUp(provider, request), (err: Error & { kind?: string }) => {
      assert.equal(err.kind, 'InvalidArgument');
      assert.match(err.message, /is not a mounted network namespace/);
      return true;
    });
  });

  it('logs the set-up duration per pod', async () => {
    const provider = await harness.provider();
    const netns = await harness.netns();
    const request = harness.request(netns.path);

    await harness.setUp(provider, request);
    const [record] = harness.log.find('CNI ADD of the pod finished').filter((entry) => entry.sandbox_id === request.sandboxId);
    assert.ok(record, 'no "CNI ADD of the pod finished" record for the sandbox');
    assert.equal(typeof record.duration_ms, 'number');
    assert.ok((record.duration_ms as number) > 0);
    assert.equal(record.network, 'testnet');

    await harness.tearDown(provider, request);
  });
});
