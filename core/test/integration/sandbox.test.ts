import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { entries, mountsUnder, podConfig, runtimeTestConfig } from '../support/pods.js';
import { stopRuntimeDaemon } from '../support/runtime-daemon.js';

for (const handler of ['runc', 'crun']) {
  describe(`pod sandboxes on ${handler}`, () => {
    let daemon: TestDaemon;
    let cgroupParent: string;

    before(async () => {
      const setup = runtimeTestConfig({ runtime: { shm_size: 8 * 1024 * 1024 } });
      cgroupParent = setup.cgroupParent;
      daemon = await TestDaemon.start({ config: setup.config });
    });

    after(async () => {
      await stopRuntimeDaemon(daemon, cgroupParent);
    });

    const runPod = async (config = podConfig('pod')): Promise<string> =>
      (await daemon.client.runtime.RunPodSandbox({ config, runtime_handler: handler })).pod_sandbox_id;

    test('run pins namespaces and writes files', async () => {
      const config = podConfig('files', {
        dns_config: { servers: ['10.96.0.10'], searches: ['default.svc.cluster.local', 'cluster.local'], options: ['ndots:5'] },
      });
      const id = await runPod(config);
      const podDir = path.join(daemon.dir, 'run/sandboxes', id);

      const mounts = await mountsUnder(podDir);
      for (const kind of ['net', 'ipc', 'uts']) assert.ok(mounts.includes(path.join(podDir, 'ns', kind)), `${kind} not pinned`);
      assert.ok(mounts.includes(path.join(podDir, 'shm')), '/dev/shm not mounted');

      assert.equal(await readFile(path.join(podDir, 'hostname'), 'utf8'), 'files-host\n');
      assert.equal(
        await readFile(path.join(podDir, 'resolv.conf'), 'utf8'),
        'search default.svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n',
      );
      assert.match(await readFile(path.join(podDir, 'hosts'), 'utf8'), /^127\.0\.0\.1\tlocalhost$/m);

      const status = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id, verbose: true });
      assert.equal(status.status?.state, 'SANDBOX_READY');
      assert.equal(status.status?.runtime_handler, handler);
      assert.equal(status.status?.metadata?.name, config.metadata?.name);
      assert.equal(status.status?.linux?.namespaces?.options?.network, 'POD');
      assert.equal(status.status?.labels?.app, 'files');
      const info = JSON.parse(status.info?.info ?? '{}') as { shm: string; networkSetupMs: number | null };
      assert.equal(info.shm, path.join(podDir, 'shm'));
      assert.equal(typeof info.networkSetupMs, 'number');
    });

    test('stop and remove release everything', async () => {
      const id = await runPod();
      const podDir = path.join(daemon.dir, 'run/sandboxes', id);

      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: id });
      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: id });
      assert.deepEqual(await mountsUnder(podDir), []);
      const stopped = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id });
      assert.equal(stopped.status?.state, 'SANDBOX_NOTREADY');

      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
      await assert.rejects(stat(podDir), /ENOENT/);
      assert.ok(!(await entries(path.join(daemon.dir, 'root/sandboxes'))).includes(`${id}.json`));
      const missing = await expectGrpcError(daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id }));
      assert.equal(missing.code, grpc.status.NOT_FOUND);
    });

    test('list filters by id, state and labels', async () => {
      const first = await runPod(podConfig('alpha'));
      const second = await runPod(podConfig('beta'));
      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: second });

      const byId = await daemon.client.runtime.ListPodSandbox({ filter: { id: first.slice(0, 12) } });
      assert.deepEqual(byId.items?.map((item) => item.id), [first]);

      const ready = await daemon.client.runtime.ListPodSandbox({ filter: { state: { state: 'SANDBOX_READY' } } });
      const readyIds = ready.items?.map((item) => item.id) ?? [];
      assert.ok(readyIds.includes(first));
      assert.ok(!readyIds.includes(second));

      const byLabel = await daemon.client.runtime.ListPodSandbox({ filter: { label_selector: { app: 'beta' } } });
      assert.deepEqual(byLabel.items?.map((item) => item.id), [second]);

      const none = await daemon.client.runtime.ListPodSandbox({ filter: { label_selector: { app: 'beta', suite: 'other' } } });
      assert.deepEqual(none.items, []);
    });

    test('host network pod pins only IPC', async () => {
      const id = await runPod(
        podConfig('hostnet', { linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } }),
      );
      const podDir = path.join(daemon.dir, 'run/sandboxes', id);
      const mounts = await mountsUnder(podDir);
      assert.ok(mounts.includes(path.join(podDir, 'ns/ipc')));
      assert.ok(!mounts.includes(path.join(podDir, 'ns/net')));
      assert.ok(!mounts.includes(path.join(podDir, 'ns/uts')));
      assert.equal(await readFile(path.join(podDir, 'hosts'), 'utf8'), await readFile('/etc/hosts', 'utf8'));
      assert.equal(await readFile(path.join(podDir, 'hostname'), 'utf8'), `${os.hostname()}\n`);
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
    });

    test('duplicate name is AlreadyExists', async () => {
      const config = podConfig('twice');
      await runPod(config);
      const err = await expectGrpcError(runPod(config));
      assert.equal(err.code, grpc.status.ALREADY_EXISTS);
      assert.match(err.details, /already used by sandbox/);
    });

    test('bad input is InvalidArgument and leaves nothing', async () => {
      const before = {
        run: await entries(path.join(daemon.dir, 'run/sandboxes')),
        root: await entries(path.join(daemon.dir, 'root/sandboxes')),
        mounts: await mountsUnder(daemon.dir),
      };
      const hostNetwork = { namespace_options: { network: 'NODE' as const } };
      const cases: { label: string; config: ReturnType<typeof podConfig>; handler?: string; message: RegExp }[] = [
        { label: 'unknown handler', config: podConfig('bad'), handler: 'kata-nope', message: /runtime handler "kata-nope" is not configured \(configured: crun, runc\)/ },
        { label: 'newline smuggles a second sysctl', config: podConfig('bad', { linux: { sysctls: { 'net.ipv4.ip_forward': '1\nkernel.core_pattern=|/bin/sh' } } }), message: /net\.ipv4\.ip_forward.*invalid value/ },
        { label: 'plus smuggles a second sysctl', config: podConfig('bad', { linux: { sysctls: { 'kernel.shm_rmid_forced': '1+kernel.core_pattern=x' } } }), message: /invalid value/ },
        { label: 'equals in the name', config: podConfig('bad', { linux: { sysctls: { 'net.ipv4.ip_forward=1,kernel.x': '1' } } }), message: /invalid sysctl name/ },
        { label: 'node-wide sysctl', config: podConfig('bad', { linux: { sysctls: { 'kernel.core_pattern': 'core' } } }), message: /not namespaced/ },
        { label: 'net sysctl on host network', config: podConfig('bad', { linux: { security_context: hostNetwork, sysctls: { 'net.ipv4.ip_forward': '1' } } }), message: /host network/ },
        { label: 'sysctl missing on the node', config: podConfig('bad', { linux: { sysctls: { 'net.ipv4.does_not_exist': '1' } } }), message: /no such sysctl on this node/ },
        { label: 'path traversal in sysctl', config: podConfig('bad', { linux: { sysctls: { 'net/../../kernel/core_pattern': '1' } } }), message: /invalid sysctl name/ },
        { label: 'DNS server not an IP', config: podConfig('bad', { dns_config: { servers: ['1.2.3.4\nnameserver 6.6.6.6'] } }), message: /dns_config\.servers\[0\]/ },
        { label: 'DNS option with newline', config: podConfig('bad', { dns_config: { options: ['ndots:5\nsearch evil'] } }), message: /dns_config\.options\[0\]/ },
        { label: 'bad hostname', config: podConfig('bad', { hostname: 'a b' }), message: /hostname: invalid value/ },
        { label: 'empty name', config: { ...podConfig('bad'), metadata: { name: '', namespace: 'default', uid: 'u' } }, message: /metadata\.name: must not be empty/ },
        { label: 'systemd slice', config: podConfig('bad', { linux: { cgroup_parent: 'kubepods.slice' } }), message: /systemd slice/ },
        { label: 'cgroup escape', config: podConfig('bad', { linux: { cgroup_parent: '/kubepods/../../etc' } }), message: /not a cgroupfs path/ },
        { label: 'pod-level TARGET pid', config: podConfig('bad', { linux: { security_context: { namespace_options: { pid: 'TARGET' } } } }), message: /TARGET is not allowed/ },
      ];

      for (const entry of cases) {
        const err = await expectGrpcError(daemon.client.runtime.RunPodSandbox({ config: entry.config, runtime_handler: entry.handler ?? handler }));
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `${entry.label}: ${err.details}`);
        assert.match(err.details, entry.message, entry.label);
      }

      assert.deepEqual(await entries(path.join(daemon.dir, 'run/sandboxes')), before.run);
      assert.deepEqual(await entries(path.join(daemon.dir, 'root/sandboxes')), before.root);
      assert.deepEqual(await mountsUnder(daemon.dir), before.mounts);
    });

    test('sandbox survives a daemon kill', async () => {
      const id = await runPod(podConfig('survivor'));
      await daemon.kill();
      daemon = await TestDaemon.start({ dir: daemon.dir, config: { ...runtimeTestConfig().config, runtime: { cgroup_parent: cgroupParent } } });

      const status = await daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id });
      assert.equal(status.status?.state, 'SANDBOX_READY');
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
      assert.deepEqual(await mountsUnder(path.join(daemon.dir, 'run/sandboxes', id)), []);
    });
  });
}
