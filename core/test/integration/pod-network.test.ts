import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { isIPv4, isIPv6 } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { mountsUnder, podConfig, removeAllPods, removeCgroupParent, runtimeTestConfig } from '../support/pods.js';
import { startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { containerConfig, exec, runPod, startContainer, startRuntimeDaemon } from '../support/runtime-daemon.js';
import { FAILING_PLUGIN, RECORDING_PLUGIN, TestNetwork, freePort, httpGetCommand, httpServerCommand } from '../support/network.js';

let images: RuntimeImages;

before(async () => {
  images = await startRuntimeImages();
});

after(async () => {
  await images.stop();
});

/** Starts a daemon with the runc and crun handlers and the cni provider on `network`. */
async function startNetworkDaemon(network: TestNetwork, cgroupParent: string, dir?: string): Promise<TestDaemon> {
  const { daemon } = await startRuntimeDaemon(images, {
    dir,
    cgroupParent,
    config: { network: { provider: 'cni' }, plugins: { cni: network.options() } },
  });
  return daemon;
}

/** Returns the primary IP and the additional IPs that PodSandboxStatus reports. */
async function podIps(daemon: TestDaemon, id: string): Promise<{ ip: string; additional: string[] }> {
  const status = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id });
  return {
    ip: status.status?.network?.ip ?? '',
    additional: (status.status?.network?.additional_ips ?? []).map((entry) => entry.ip ?? ''),
  };
}

/** Polls `read` until it returns `expected` or 10 s pass; returns the last value. */
async function eventually<T>(read: () => Promise<T>, expected: T): Promise<T> {
  let value = await read();
  for (let attempt = 0; attempt < 100 && JSON.stringify(value) !== JSON.stringify(expected); attempt++) {
    await sleep(100);
    value = await read();
  }
  return value;
}

describe('pod networking through the CRI socket', () => {
  let network: TestNetwork;
  let daemon: TestDaemon;
  let cgroupParent: string;

  before(async () => {
    network = await TestNetwork.create();
    await network.writeBridgeList();
    cgroupParent = runtimeTestConfig().cgroupParent;
    daemon = await startNetworkDaemon(network, cgroupParent);
    await daemon.client.image.PullImage({ image: { image: images.busybox } });
  });

  after(async () => {
    await removeAllPods(daemon.client).catch((err: unknown) => console.error('cannot remove test pods', err));
    await daemon.cleanup();
    await removeCgroupParent(cgroupParent);
    await network.cleanup();
  });

  test('NetworkReady is true', async () => {
    const status = await daemon.client.runtime.Status({});
    const ready = status.status?.conditions?.find((condition) => condition.type === 'NetworkReady');
    assert.equal(ready?.status, true, JSON.stringify(ready));
  });

  test('two pods get distinct reachable IPs', async () => {
    const first = await runPod(daemon, 'runc', 'first');
    const second = await runPod(daemon, 'runc', 'second');
    const firstIp = (await podIps(daemon, first.id)).ip;
    const secondIp = (await podIps(daemon, second.id)).ip;

    assert.ok(firstIp.startsWith(`${network.prefix}.`), `${firstIp} is not in ${network.subnet}`);
    assert.ok(secondIp.startsWith(`${network.prefix}.`), `${secondIp} is not in ${network.subnet}`);
    assert.notEqual(firstIp, secondIp);

    const client = await startContainer(daemon, first, containerConfig('client', images.busybox, ['sleep', '1000']));
    const ping = await exec(daemon, client, ['ping', '-c', '1', '-W', '2', secondIp]);
    assert.equal(ping.exitCode, 0, `ping ${secondIp} failed: ${ping.stdout}${ping.stderr}`);

    const eth0 = await exec(daemon, client, ['ip', '-o', '-4', 'addr', 'show', 'eth0']);
    assert.match(eth0.stdout, new RegExp(`inet ${firstIp.replaceAll('.', '\\.')}/24`));

    for (const id of [first.id, second.id]) {
      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: id });
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
  });

  for (const handler of ['runc', 'crun']) {
    test(`container reaches a server in another pod on ${handler}`, async () => {
      const serverPod = await runPod(daemon, handler, 'server');
      const clientPod = await runPod(daemon, handler, 'client');
      const serverIp = (await podIps(daemon, serverPod.id)).ip;

      await startContainer(daemon, serverPod, containerConfig('httpd', images.busybox, httpServerCommand(8080, 'hello from the server pod')));
      const client = await startContainer(daemon, clientPod, containerConfig('client', images.busybox, ['sleep', '1000']));

      const response = await eventually(async () => {
        const result = await exec(daemon, client, httpGetCommand(serverIp, 8080));
        return result.stdout.endsWith('hello from the server pod\n');
      }, true);
      assert.equal(response, true, `no response from ${serverIp}:8080`);

      for (const id of [serverPod.id, clientPod.id]) {
        await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: id });
        await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
      }
    });
  }

  test('hostPort reaches the pod from loopback', async () => {
    const hostPort = await freePort();
    const pod = await runPod(daemon, 'runc', 'hostport', {
      port_mappings: [{ protocol: 'TCP', container_port: 8080, host_port: hostPort, host_ip: '' }],
    });
    await startContainer(daemon, pod, containerConfig('httpd', images.busybox, httpServerCommand(8080, 'hello through hostPort')));

    const body = await eventually(async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${hostPort}/index.html`, { signal: AbortSignal.timeout(3000) });
        return await response.text();
      } catch (err) {
        return `fetch failed: ${(err as Error).message}`;
      }
    }, 'hello through hostPort\n');
    assert.equal(body, 'hello through hostPort\n');

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    await assert.rejects(fetch(`http://127.0.0.1:${hostPort}/index.html`, { signal: AbortSignal.timeout(3000) }), 'the hostPort outlived the pod');
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('hostNetwork pod sees host interfaces', async () => {
    const allocationsBefore = await network.allocations();
    const pod = await runPod(daemon, 'runc', 'hostnet', {
      linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    });
    const container = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));

    const links = await exec(daemon, container, ['cat', '/proc/net/dev']);
    assert.match(links.stdout, new RegExp(`\\b${network.bridge}:`), 'the host bridge is not visible');
    assert.match(links.stdout, /\beth0:/);
    assert.deepEqual(await network.allocations(), allocationsBefore, 'a hostNetwork pod got an address from CNI');
    assert.equal((await podIps(daemon, pod.id)).ip, '');

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('stop releases the IP and the veth', async () => {
    const allocationsBefore = await network.allocations();
    const vethsBefore = await network.veths();
    const pod = await runPod(daemon, 'runc', 'release');
    const { ip } = await podIps(daemon, pod.id);

    assert.deepEqual(await network.allocations(), [...allocationsBefore, ip].sort());
    assert.equal((await network.veths()).length, vethsBefore.length + 1);

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    assert.deepEqual(await network.allocations(), allocationsBefore);
    assert.deepEqual(await network.veths(), vethsBefore);
    assert.deepEqual(await podIps(daemon, pod.id), { ip: '', additional: [] }, 'a stopped pod still reports its released IP');
    assert.ok(!(await readdir(path.join(daemon.dir, 'root/network/cni/cache'))).includes(pod.id), 'the attachment record outlived stop');

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('status reports the network set-up time', async () => {
    const pod = await runPod(daemon, 'runc', 'timed');
    const status = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: pod.id, verbose: true });
    const info = JSON.parse(status.info?.info ?? '{}') as { networkSetupMs?: number };
    assert.equal(typeof info.networkSetupMs, 'number');
    assert.ok(info.networkSetupMs! > 0);

    const record = daemon.logRecords().find((entry) => entry.msg === 'CNI ADD of the pod finished' && entry.sandbox_id === pod.id);
    assert.ok(record, 'the provider did not log its ADD time');
    assert.equal(typeof record.duration_ms, 'number');

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('50 concurrent pods get unique IPs', async (t) => {
    const allocationsBefore = await network.allocations();
    const started = performance.now();
    const pods = await Promise.all(Array.from({ length: 50 }, (_, index) => runPod(daemon, 'runc', `many${index}`)));
    const elapsed = performance.now() - started;

    const ips = await Promise.all(pods.map(async (pod) => (await podIps(daemon, pod.id)).ip));
    assert.ok(ips.every((ip) => ip.startsWith(`${network.prefix}.`)), `addresses outside ${network.subnet}: ${ips.join(', ')}`);
    assert.equal(new Set(ips).size, 50, `duplicate addresses: ${[...ips].sort().join(', ')}`);
    t.diagnostic(`50 concurrent RunPodSandbox calls: ${Math.round(elapsed)} ms in all`);

    await Promise.all(pods.map((pod) => daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id })));
    await Promise.all(pods.map((pod) => daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id })));
    assert.deepEqual(await network.allocations(), allocationsBefore);
  });

  /** Waits until the provider loaded a default network named `name` after `skip` such records. */
  async function waitForDefault(name: string, skip: number): Promise<void> {
    await daemon.waitForLog((record) => {
      if (record.msg !== 'CNI network configs loaded') return false;
      const loaded = daemon.logRecords().filter((entry) => entry.msg === 'CNI network configs loaded');
      return loaded.length > skip && loaded.at(-1)?.default_network === name;
    });
  }

  function loadedCount(): number {
    return daemon.logRecords().filter((record) => record.msg === 'CNI network configs loaded').length;
  }

  /** Asserts that no trace of the pod named `name` is left: IP, veth, sandbox or mount. */
  async function assertNoPodLeft(name: string, allocationsBefore: string[], vethsBefore: string[]): Promise<void> {
    assert.deepEqual(await network.allocations(), allocationsBefore);
    assert.deepEqual(await network.veths(), vethsBefore);
    const { items } = await daemon.client.runtime.ListPodSandbox({});
    assert.ok(!(items ?? []).some((item) => item.metadata?.name === name), 'the failed pod is listed');
    assert.deepEqual(await mountsUnder(path.join(daemon.dir, 'run/sandboxes')), []);
  }

  test('pod identity, DNS and bandwidth reach CNI', async (t) => {
    const recordFile = path.join(daemon.dir, 'cni-calls.jsonl');
    await network.writePlugin('recorder', RECORDING_PLUGIN);
    const loaded = loadedCount();
    await network.writeBridgeList({ name: 'recorded', extraPlugins: [{ type: 'recorder', recordFile, capabilities: { dns: true, bandwidth: true } }] });
    t.after(async () => {
      const count = loadedCount();
      await network.writeBridgeList();
      await waitForDefault('testnet', count);
    });
    await waitForDefault('recorded', loaded);

    const config = podConfig('identity', {
      dns_config: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
      annotations: { 'kubernetes.io/ingress-bandwidth': '10M', 'kubernetes.io/egress-bandwidth': '20M' },
    });
    const { pod_sandbox_id: id } = await daemon.client.runtime.RunPodSandbox({ config, runtime_handler: 'runc' });
    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: id! });
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id! });

    const calls = (await readFile(recordFile, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { command: string; env: Record<string, string>; conf: Record<string, unknown> });
    const add = calls.find((call) => call.command === 'ADD');
    const del = calls.find((call) => call.command === 'DEL');
    assert.ok(add, 'the recorder saw no ADD');
    assert.ok(del, 'the recorder saw no DEL');

    const expectedArgs = [
      'IgnoreUnknown=1',
      `K8S_POD_INFRA_CONTAINER_ID=${id}`,
      `K8S_POD_NAME=${config.metadata!.name}`,
      'K8S_POD_NAMESPACE=default',
      `K8S_POD_UID=${config.metadata!.uid}`,
    ];
    assert.deepEqual(add.env.CNI_ARGS?.split(';').sort(), expectedArgs);
    assert.deepEqual(del.env.CNI_ARGS?.split(';').sort(), expectedArgs);
    assert.equal(add.env.CNI_CONTAINERID, id);
    assert.equal(add.env.CNI_IFNAME, 'eth0');
    assert.equal(add.env.CNI_NETNS, path.join(daemon.dir, 'run/sandboxes', id!, 'ns/net'));

    const runtimeConfig = add.conf.runtimeConfig as { dns?: unknown; bandwidth?: { ingressRate: number; egressRate: number } };
    assert.deepEqual(runtimeConfig.dns, { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] });
    assert.equal(runtimeConfig.bandwidth?.ingressRate, 10_000_000);
    assert.equal(runtimeConfig.bandwidth?.egressRate, 20_000_000);
  });

  test('failing plugin leaves no pod behind', async (t) => {
    await network.writePlugin('failing', FAILING_PLUGIN);
    const loaded = loadedCount();
    await network.writeBridgeList({ name: 'failing', extraPlugins: [{ type: 'failing', message: 'quota of widgets exceeded' }] });
    t.after(async () => {
      const count = loadedCount();
      await network.writeBridgeList();
      await waitForDefault('testnet', count);
    });
    await waitForDefault('failing', loaded);

    const allocationsBefore = await network.allocations('failing');
    const vethsBefore = await network.veths();
    const config = podConfig('broken');
    const error = await expectGrpcError(daemon.client.runtime.RunPodSandbox({ config, runtime_handler: 'runc' }));
    assert.equal(error.code, grpc.status.INTERNAL);
    assert.match(error.details, /CNI plugin "failing" \(network "failing", ADD, sandbox [0-9a-f]{64}\) failed: quota of widgets exceeded \(CNI error code 107, plugin-specific error\)/);
    await assertNoPodLeft(config.metadata!.name!, allocationsBefore, vethsBefore);
  });

  test('broken conflist refuses pods', async (t) => {
    const vethsBefore = await network.veths();
    const allocationsBefore = await network.allocations();
    await network.writeConfig('10-test.conflist', '{"cniVersion": "1.0.0", "name": "testnet", "plugins": [');
    t.after(async () => {
      const count = loadedCount();
      await network.writeBridgeList();
      await waitForDefault('testnet', count);
    });

    const ready = await eventually(async () => {
      const status = await daemon.client.runtime.Status({});
      return status.status?.conditions?.find((condition) => condition.type === 'NetworkReady')?.reason ?? '';
    }, 'InvalidNetworkConfig');
    assert.equal(ready, 'InvalidNetworkConfig');

    const config = podConfig('unready');
    const error = await expectGrpcError(daemon.client.runtime.RunPodSandbox({ config, runtime_handler: 'runc' }));
    assert.equal(error.code, grpc.status.FAILED_PRECONDITION);
    assert.match(error.details, /pod network is not ready \(InvalidNetworkConfig\): no valid CNI network config in .*10-test\.conflist: invalid JSON/);
    await assertNoPodLeft(config.metadata!.name!, allocationsBefore, vethsBefore);
  });
});

describe('pod networking across restarts and address families', () => {
  let network: TestNetwork;
  let daemon: TestDaemon;
  let cgroupParent: string;

  before(async () => {
    network = await TestNetwork.create();
    await network.writeBridgeList({ dualStack: true });
    cgroupParent = runtimeTestConfig().cgroupParent;
    daemon = await startNetworkDaemon(network, cgroupParent);
  });

  after(async () => {
    await removeAllPods(daemon.client).catch((err: unknown) => console.error('cannot remove test pods', err));
    await daemon.cleanup();
    await removeCgroupParent(cgroupParent);
    await network.cleanup();
  });

  test('dual stack reports both IPs', async () => {
    const pod = await runPod(daemon, 'runc', 'dual');
    const { ip, additional } = await podIps(daemon, pod.id);

    assert.ok(isIPv4(ip), `primary IP ${ip} is not IPv4`);
    assert.ok(ip.startsWith(`${network.prefix}.`), `${ip} is not in ${network.subnet}`);
    assert.equal(additional.length, 1, `additional IPs: ${additional.join(', ')}`);
    assert.ok(isIPv6(additional[0]!), `${additional[0]} is not IPv6`);
    assert.ok(additional[0]!.startsWith(network.v6Subnet.split('::')[0]!), `${additional[0]} is not in ${network.v6Subnet}`);

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    assert.deepEqual(await network.allocations(), []);
  });

  test('daemon killed between ADD and DEL still cleans up', async () => {
    const pod = await runPod(daemon, 'runc', 'survivor');
    const { ip, additional } = await podIps(daemon, pod.id);
    assert.deepEqual(await network.allocations(), [ip, ...additional].sort());
    assert.equal((await network.veths()).length, 1);

    await daemon.kill();
    // The config changes while the daemon is down; DEL must use what ADD used.
    await network.writeBridgeList({ name: 'renamed' });
    daemon = await startNetworkDaemon(network, cgroupParent, daemon.dir);

    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    assert.deepEqual(await network.allocations(), [], 'addresses stayed allocated after the restart');
    assert.deepEqual(await network.veths(), []);
    assert.deepEqual(await podIps(daemon, pod.id), { ip: '', additional: [] }, 'a stopped pod still reports its released IPs');

    // The cleared addresses are persisted: a restarted daemon reports none either.
    await daemon.kill();
    daemon = await startNetworkDaemon(network, cgroupParent, daemon.dir);
    assert.deepEqual(await podIps(daemon, pod.id), { ip: '', additional: [] }, 'the stopped pod reports IPs again after a restart');
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    assert.deepEqual(await mountsUnder(path.join(daemon.dir, 'run/sandboxes')), []);
  });
});

