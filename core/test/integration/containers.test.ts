import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { CRI_LOG_LINE } from '../support/driver-suite.js';
import { entries, mountsUnder } from '../support/pods.js';
import { runtimeImage, startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { pushImage } from '../support/registry.js';
import { containerConfig, exec, runPod, startContainer, startRuntimeDaemon, stopRuntimeDaemon, waitExited } from '../support/runtime-daemon.js';
import { detectCgroupLayout } from '../../src/cgroups/layout.js';

let images: RuntimeImages;
const run = promisify(execFile);

before(async () => {
  images = await startRuntimeImages();
});

after(async () => {
  await images.stop();
});

for (const handler of ['runc', 'crun']) {
  describe(`containers on ${handler}`, () => {
    let daemon: TestDaemon;
    let cgroupParent: string;

    before(async () => {
      ({ daemon, cgroupParent } = await startRuntimeDaemon(images));
      for (const image of [images.busybox, images.user1000]) await daemon.client.image.PullImage({ image: { image } });
    });

    after(async () => {
      await stopRuntimeDaemon(daemon, cgroupParent);
    });

    test('Status lists the handler features', async () => {
      const status = await daemon.client.runtime.Status({ verbose: true });
      const listed = status.runtime_handlers?.find((entry) => entry.name === handler);
      assert.ok(listed, `Status lists no handler ${handler}`);
      // berth sets up neither recursive read-only mounts nor user namespaces, on either runtime.
      assert.equal(listed.features?.recursive_read_only_mounts, false);
      assert.equal(listed.features?.user_namespaces, false);

      const handlers = JSON.parse(status.info?.handlers ?? '{}') as Record<string, { driver: string; runtime: string; updateResources: boolean; reported?: { ociVersionMax?: string } }>;
      assert.equal(handlers[handler]?.driver, handler);
      assert.match(handlers[handler]?.runtime ?? '', new RegExp(`^${handler} \\d+\\.\\d+`));
      assert.equal(handlers[handler]?.updateResources, true);
      const features = spawnSync(handler, ['features'], { encoding: 'utf8' });
      if (features.status === 0) {
        const reported = JSON.parse(features.stdout) as { ociVersionMax: string };
        assert.equal(handlers[handler]?.reported?.ociVersionMax, reported.ociVersionMax);
      } else {
        assert.equal(handlers[handler]?.reported, undefined, `${handler} has no features command`);
      }
    });

    test('pod handler runs its containers', async () => {
      const pod = await runPod(daemon, handler, 'handler');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));
      const verbose = await daemon.client.runtime.ContainerStatus({ container_id: id, verbose: true });
      assert.equal((JSON.parse(verbose.info?.info ?? '{}') as { runtimeHandler: string }).runtimeHandler, handler);

      // Each runtime keeps its containers under the root its driver logs at start-up.
      const rootOf = (runtime: string): string => {
        const ready = daemon.logRecords().find((record) => record.msg === `${runtime} driver ready`);
        assert.ok(ready, `no "${runtime} driver ready" log record`);
        return String(ready.runtime_root);
      };
      const other = handler === 'runc' ? 'crun' : 'runc';
      const state = await run(handler, ['--root', rootOf(handler), 'state', id]);
      assert.equal((JSON.parse(state.stdout) as { status: string }).status, 'running');
      await assert.rejects(run(other, ['--root', rootOf(other), 'state', id]), `${other} also knows container ${id}`);
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    });

    test('exec output and CRI log lines', async () => {
      const pod = await runPod(daemon, handler, 'exec');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sh', '-c', 'echo hello; echo oops >&2; sleep 1000']));

      const status = await daemon.client.runtime.ContainerStatus({ container_id: id });
      assert.equal(status.status?.state, 'CONTAINER_RUNNING');
      assert.ok(Number(status.status?.started_at) > 0);

      const result = await exec(daemon, id, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
      assert.equal(result.stdout, 'out\n');
      assert.equal(result.stderr, 'err\n');
      assert.equal(result.exitCode, 3);

      const hostname = await exec(daemon, id, ['hostname']);
      assert.equal(hostname.stdout, 'exec-host\n');

      await sleep(200);
      const logPath = status.status?.log_path ?? '';
      assert.equal(logPath, path.join(pod.config.log_directory!, 'main.log'));
      const records = (await readFile(logPath, 'utf8')).trimEnd().split('\n').map((line) => CRI_LOG_LINE.exec(line));
      assert.ok(records.every((record) => record !== null));
      assert.deepEqual(records.map((record) => `${record![2]} ${record![3]} ${record![4]}`).sort(), ['stderr F oops', 'stdout F hello']);
    });

    test('exec timeout kills and fails the call', async () => {
      const pod = await runPod(daemon, handler, 'timeout');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));

      const started = Date.now();
      const err = await expectGrpcError(daemon.client.runtime.ExecSync({ container_id: id, cmd: ['sleep', '41'], timeout: 1 }));
      assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
      assert.match(err.details, /command "sleep" with 1 argument in container [0-9a-f]{64} timed out after 1 s/);
      assert.ok(Date.now() - started < 5000);
      assert.doesNotMatch((await exec(daemon, id, ['ps', '-o', 'args'])).stdout, /sleep 41/);

      const stopped = await expectGrpcError(daemon.client.runtime.ExecSync({ container_id: 'f'.repeat(64), cmd: ['true'], timeout: 1 }));
      assert.equal(stopped.code, grpc.status.NOT_FOUND);
    });

    test('stop honours signal and timeout', async () => {
      const pod = await runPod(daemon, handler, 'stop');

      const graceful = await startContainer(daemon, pod, containerConfig('graceful', images.busybox, ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done']));
      await sleep(300);
      await daemon.client.runtime.StopContainer({ container_id: graceful, timeout: 10 });
      const gracefulStatus = await waitExited(daemon, graceful);
      assert.equal(gracefulStatus.exit_code, 0);
      assert.equal(gracefulStatus.reason, 'Completed');

      const stubborn = await startContainer(daemon, pod, containerConfig('stubborn', images.busybox, ['sleep', '1000']));
      let started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: stubborn, timeout: 1 });
      const waited = Date.now() - started;
      assert.ok(waited >= 900, `stop with timeout 1 took only ${waited} ms`);
      assert.ok(waited < 5000, `stop with timeout 1 took ${waited} ms`);
      const stubbornStatus = await waitExited(daemon, stubborn);
      assert.equal(stubbornStatus.exit_code, 137);
      assert.equal(stubbornStatus.reason, 'Error');

      const killed = await startContainer(daemon, pod, containerConfig('killed', images.busybox, ['sleep', '1000']));
      started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: killed, timeout: 0 });
      assert.ok(Date.now() - started < 900, 'timeout 0 did not kill at once');
      assert.equal((await waitExited(daemon, killed)).exit_code, 137);

      await daemon.client.runtime.StopContainer({ container_id: killed, timeout: 10 });
      assert.ok(Number(stubbornStatus.finished_at) >= Number(stubbornStatus.started_at));
    });

    test('exit reasons Completed, Error and OOMKilled', async () => {
      const pod = await runPod(daemon, handler, 'reasons');
      const completed = await startContainer(daemon, pod, containerConfig('completed', images.busybox, ['true']));
      const failed = await startContainer(daemon, pod, containerConfig('failed', images.busybox, ['sh', '-c', 'exit 3']));
      const oom = await startContainer(
        daemon,
        pod,
        containerConfig('oom', images.busybox, ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=256M', 'count=1'], {
          linux: { resources: { memory_limit_in_bytes: 16 * 1024 * 1024 } },
        }),
      );

      const completedStatus = await waitExited(daemon, completed);
      assert.equal(completedStatus.reason, 'Completed');
      assert.equal(completedStatus.exit_code, 0);
      const failedStatus = await waitExited(daemon, failed);
      assert.equal(failedStatus.reason, 'Error');
      assert.equal(failedStatus.exit_code, 3);
      const oomStatus = await waitExited(daemon, oom);
      assert.equal(oomStatus.reason, 'OOMKilled');
      assert.equal(oomStatus.exit_code, 137);
      assert.equal(oomStatus.image?.image, images.busybox);
      assert.match(oomStatus.image_ref ?? '', /@sha256:[0-9a-f]{64}$/);
    });

    test('list filters and remove', async () => {
      const pod = await runPod(daemon, handler, 'lists');
      const other = await runPod(daemon, handler, 'lists-other');
      const running = await startContainer(daemon, pod, containerConfig('running', images.busybox, ['sleep', '1000'], { labels: { role: 'web' } }));
      const exited = await startContainer(daemon, pod, containerConfig('exited', images.busybox, ['true'], { labels: { role: 'job' } }));
      const elsewhere = await startContainer(daemon, other, containerConfig('elsewhere', images.busybox, ['sleep', '1000'], { labels: { role: 'web' } }));
      await waitExited(daemon, exited);

      const ids = async (filter: object): Promise<string[]> =>
        ((await daemon.client.runtime.ListContainers({ filter })).containers ?? []).map((container) => container.id!).sort();

      assert.deepEqual(await ids({ pod_sandbox_id: pod.id }), [running, exited].sort());
      assert.deepEqual(await ids({ id: running.slice(0, 10) }), [running]);
      assert.deepEqual(await ids({ pod_sandbox_id: pod.id, state: { state: 'CONTAINER_RUNNING' } }), [running]);
      assert.deepEqual(await ids({ pod_sandbox_id: pod.id, state: { state: 'CONTAINER_EXITED' } }), [exited]);
      assert.deepEqual(await ids({ label_selector: { role: 'web', container: 'elsewhere' } }), [elsewhere]);
      assert.deepEqual(await ids({ label_selector: { role: 'web' } }), [running, elsewhere].sort());

      await daemon.client.runtime.RemoveContainer({ container_id: running });
      await daemon.client.runtime.RemoveContainer({ container_id: running });
      assert.deepEqual(await ids({ pod_sandbox_id: pod.id }), [exited]);
      const gone = await expectGrpcError(daemon.client.runtime.ContainerStatus({ container_id: running }));
      assert.equal(gone.code, grpc.status.NOT_FOUND);
      assert.ok(!(await entries(path.join(daemon.dir, 'run/containers'))).includes(running));
    });

    test('stats move with CPU and memory use', async () => {
      const pod = await runPod(daemon, handler, 'stats');
      const burner = await startContainer(daemon, pod, containerConfig('burner', images.busybox, ['sh', '-c', 'while true; do :; done']));
      const holder = await startContainer(
        daemon,
        pod,
        containerConfig('holder', images.busybox, ['sh', '-c', 'head -c 48000000 /dev/zero | tr "\\0" a > /dev/shm/fill; sleep 1000']),
      );

      const first = await daemon.client.runtime.ContainerStats({ container_id: burner });
      await sleep(1200);
      const second = await daemon.client.runtime.ContainerStats({ container_id: burner });
      const cpuBefore = BigInt(first.stats?.cpu?.usage_core_nano_seconds?.value ?? '0');
      const cpuAfter = BigInt(second.stats?.cpu?.usage_core_nano_seconds?.value ?? '0');
      assert.ok(cpuAfter - cpuBefore > 500_000_000n, `CPU moved by ${cpuAfter - cpuBefore} ns only`);
      assert.ok(BigInt(second.stats?.cpu?.usage_nano_cores?.value ?? '0') > 500_000_000n);
      assert.ok(second.stats?.writable_layer?.used_bytes !== undefined);

      const memory = await daemon.client.runtime.ContainerStats({ container_id: holder });
      assert.ok(BigInt(memory.stats?.memory?.working_set_bytes?.value ?? '0') > 40_000_000n, `working set ${memory.stats?.memory?.working_set_bytes?.value}`);

      const listed = await daemon.client.runtime.ListContainerStats({ filter: { pod_sandbox_id: pod.id } });
      assert.deepEqual(listed.stats?.map((entry) => entry.attributes?.id).sort(), [burner, holder].sort());

      const podStats = await daemon.client.runtime.PodSandboxStats({ pod_sandbox_id: pod.id });
      assert.ok(BigInt(podStats.stats?.linux?.memory?.working_set_bytes?.value ?? '0') > 40_000_000n);
      assert.ok(BigInt(podStats.stats?.linux?.process?.process_count?.value ?? '0') >= 2n);
      assert.equal(podStats.stats?.linux?.containers?.length, 2);

      const listedPods = await daemon.client.runtime.ListPodSandboxStats({ filter: { id: pod.id } });
      assert.deepEqual(listedPods.stats?.map((entry) => entry.attributes?.id), [pod.id]);
      await daemon.client.runtime.StopContainer({ container_id: burner, timeout: 0 });
    });

    test('stats lists keep exited containers and empty pods', async () => {
      const pod = await runPod(daemon, handler, 'statsexited');
      const empty = await runPod(daemon, handler, 'statsempty');
      const running = await startContainer(daemon, pod, containerConfig('running', images.busybox, ['sleep', '1000']));
      const exited = await startContainer(daemon, pod, containerConfig('exited', images.busybox, ['true']));
      await waitExited(daemon, exited);

      // The kubelet lists stats of every container and pod; one exited container must not fail the call.
      const listed = await daemon.client.runtime.ListContainerStats({ filter: { pod_sandbox_id: pod.id } });
      const ids = (listed.stats ?? []).map((entry) => entry.attributes?.id).sort();
      assert.deepEqual(ids, [running, exited].sort());
      const all = await daemon.client.runtime.ListContainerStats({});
      assert.ok((all.stats ?? []).some((entry) => entry.attributes?.id === running));

      const exitedStats = await daemon.client.runtime.ContainerStats({ container_id: exited });
      assert.equal(exitedStats.stats?.attributes?.id, exited);

      const emptyStats = await daemon.client.runtime.PodSandboxStats({ pod_sandbox_id: empty.id });
      assert.equal(emptyStats.stats?.attributes?.id, empty.id);
      assert.deepEqual(emptyStats.stats?.linux?.containers ?? [], []);
      const pods = await daemon.client.runtime.ListPodSandboxStats({});
      const podIds = (pods.stats ?? []).map((entry) => entry.attributes?.id);
      assert.ok(podIds.includes(pod.id));
      assert.ok(podIds.includes(empty.id));

      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: empty.id });
    });

    test('update resources and reopen log', async () => {
      const pod = await runPod(daemon, handler, 'update');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sh', '-c', 'while true; do echo tick; sleep 0.2; done']));

      await daemon.client.runtime.UpdateContainerResources({ container_id: id, linux: { memory_limit_in_bytes: 96 * 1024 * 1024, cpu_shares: 256 } });
      const layout = await detectCgroupLayout();
      const verbose = await daemon.client.runtime.ContainerStatus({ container_id: id, verbose: true });
      const cgroupsPath = (JSON.parse(verbose.info?.info ?? '{}') as { cgroupsPath: string }).cgroupsPath;
      const limitFile = layout.v1Mounts.has('memory')
        ? path.join(layout.v1Mounts.get('memory')!, cgroupsPath, 'memory.limit_in_bytes')
        : path.join(layout.unifiedMount!, cgroupsPath, 'memory.max');
      assert.equal((await readFile(limitFile, 'utf8')).trim(), String(96 * 1024 * 1024));
      assert.equal(verbose.status?.resources?.linux?.memory_limit_in_bytes, String(96 * 1024 * 1024));
      if (layout.v1Mounts.has('cpu')) {
        assert.equal((await readFile(path.join(layout.v1Mounts.get('cpu')!, cgroupsPath, 'cpu.shares'), 'utf8')).trim(), '256');
      } else {
        // The runtimes map shares to cgroup v2 weights by their own formulas; 100 is the default weight.
        assert.notEqual((await readFile(path.join(layout.unifiedMount!, cgroupsPath, 'cpu.weight'), 'utf8')).trim(), '100');
      }
      assert.equal(verbose.status?.resources?.linux?.cpu_shares, '256');

      const logPath = verbose.status?.log_path ?? '';
      await rename(logPath, `${logPath}.1`);
      await daemon.client.runtime.ReopenContainerLog({ container_id: id });
      await sleep(600);
      assert.match(await readFile(logPath, 'utf8'), /stdout F tick/);
      // The monitor closed the rotated file, so it no longer grows.
      const rotatedSize = (await stat(`${logPath}.1`)).size;
      await sleep(600);
      assert.equal((await stat(`${logPath}.1`)).size, rotatedSize, 'the rotated log still grows');

      await daemon.client.runtime.StopContainer({ container_id: id, timeout: 0 });
      await waitExited(daemon, id);
      const stopped = await expectGrpcError(daemon.client.runtime.ReopenContainerLog({ container_id: id }));
      assert.equal(stopped.code, grpc.status.FAILED_PRECONDITION);
      assert.match(stopped.details, /not running; its log cannot be reopened/);
    });

    test('security context reaches the process', async () => {
      const pod = await runPod(daemon, handler, 'security');
      const fromImage = await startContainer(daemon, pod, containerConfig('image-user', images.user1000, ['sleep', '1000']));
      assert.equal((await exec(daemon, fromImage, ['id', '-u'])).stdout, '1000\n');
      assert.match((await exec(daemon, fromImage, ['id', '-G'])).stdout, /\b3000\b/);

      const byName = await startContainer(
        daemon,
        pod,
        containerConfig('by-name', images.busybox, ['sleep', '1000'], { linux: { security_context: { run_as_username: 'user' } } }),
      );
      assert.equal((await exec(daemon, byName, ['id', '-un'])).stdout, 'user\n');

      const dropped = await startContainer(
        daemon,
        pod,
        containerConfig('dropped', images.busybox, ['sleep', '1000'], { linux: { security_context: { capabilities: { drop_capabilities: ['CHOWN'] } } } }),
      );
      const capabilities = (await exec(daemon, dropped, ['grep', 'CapEff', '/proc/self/status'])).stdout;
      const effective = BigInt(`0x${capabilities.trim().split(/\s+/)[1]}`);
      assert.equal(effective & 1n, 0n, `CAP_CHOWN still effective: ${capabilities}`);
      assert.notEqual(effective & (1n << 5n), 0n, 'CAP_KILL should stay');
      assert.notEqual((await exec(daemon, dropped, ['chown', '1000', '/tmp'])).exitCode, 0);

      const readonly = await startContainer(
        daemon,
        pod,
        containerConfig('readonly', images.busybox, ['sleep', '1000'], { linux: { security_context: { readonly_rootfs: true } } }),
      );
      const write = await exec(daemon, readonly, ['touch', '/newfile']);
      assert.notEqual(write.exitCode, 0);
      assert.match(write.stderr, /Read-only file system/);

      const withAdmin = { capabilities: { add_capabilities: ['SYS_ADMIN'] } };
      const confined = await startContainer(
        daemon,
        pod,
        containerConfig('confined', images.busybox, ['sleep', '1000'], {
          linux: { security_context: { ...withAdmin, seccomp: { profile_type: 'RuntimeDefault' } } },
        }),
      );
      const blocked = await exec(daemon, confined, ['mount', '-t', 'tmpfs', 'none', '/mnt']);
      assert.notEqual(blocked.exitCode, 0);
      assert.match(blocked.stderr, /Operation not permitted|permission denied/i);
      assert.match((await exec(daemon, confined, ['grep', 'Seccomp:', '/proc/self/status'])).stdout, /Seccomp:\s+2/);

      const unconfined = await startContainer(
        daemon,
        pod,
        containerConfig('unconfined', images.busybox, ['sleep', '1000'], {
          linux: { security_context: { ...withAdmin, seccomp: { profile_type: 'Unconfined' } } },
        }),
      );
      assert.equal((await exec(daemon, unconfined, ['mount', '-t', 'tmpfs', 'none', '/mnt'])).exitCode, 0);
    });

    test('bind mounts honour readonly and propagation', async () => {
      const hostDir = await mkdtemp(path.join(daemon.dir, 'volumes-'));
      const shared = path.join(hostDir, 'shared');
      const isolated = path.join(hostDir, 'isolated');
      const hostMounts: string[] = [];
      try {
        // Propagation depends on the host mount that contains the source, so the test makes its own:
        // one shared bind mount and one private one.
        for (const [dir, kind] of [[shared, '--make-shared'], [isolated, '--make-private']] as const) {
          await mkdir(path.join(dir, 'sub'), { recursive: true });
          await run('mount', ['--bind', dir, dir]);
          hostMounts.unshift(dir);
          await run('mount', [kind, dir]);
        }
        await writeFile(path.join(isolated, 'config'), 'from the host\n');

        const pod = await runPod(daemon, handler, 'mounts');
        const id = await startContainer(
          daemon,
          pod,
          containerConfig('main', images.busybox, ['sleep', '1000'], {
            mounts: [
              { container_path: '/ro', host_path: isolated, readonly: true },
              { container_path: '/rw', host_path: isolated, readonly: false },
              { container_path: '/follow', host_path: shared, propagation: 'PROPAGATION_HOST_TO_CONTAINER' },
              { container_path: '/private', host_path: shared, propagation: 'PROPAGATION_PRIVATE' },
            ],
          }),
        );

        assert.equal((await exec(daemon, id, ['cat', '/ro/config'])).stdout, 'from the host\n');
        const readonlyWrite = await exec(daemon, id, ['touch', '/ro/new']);
        assert.notEqual(readonlyWrite.exitCode, 0, 'a readonly mount accepted a write');
        assert.match(readonlyWrite.stderr, /Read-only file system/);
        assert.equal((await exec(daemon, id, ['sh', '-c', 'echo from the container > /rw/written'])).exitCode, 0);
        assert.equal(await readFile(path.join(isolated, 'written'), 'utf8'), 'from the container\n');

        // A mount made on the host after the start reaches HOST_TO_CONTAINER only.
        await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'berth-late', path.join(shared, 'sub')]);
        hostMounts.unshift(path.join(shared, 'sub'));
        await writeFile(path.join(shared, 'sub', 'late'), 'late\n');
        assert.equal((await exec(daemon, id, ['cat', '/follow/sub/late'])).stdout, 'late\n');
        assert.notEqual((await exec(daemon, id, ['cat', '/private/sub/late'])).exitCode, 0, 'a private mount saw a later host mount');

        const err = await expectGrpcError(
          daemon.client.runtime.CreateContainer({
            pod_sandbox_id: pod.id,
            sandbox_config: pod.config,
            config: containerConfig('follow-private', images.busybox, ['true'], {
              mounts: [{ container_path: '/follow', host_path: isolated, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
            }),
          }),
        );
        assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
        assert.match(err.details, new RegExp(`config\\.mounts\\[0\\]\\.propagation: the host mount ${isolated} holding ${isolated} is not shared or slave`));

        await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
      } finally {
        for (const mountPoint of hostMounts) await run('umount', ['-l', mountPoint]).catch((err: unknown) => console.error('cannot unmount', mountPoint, err));
        await rm(hostDir, { recursive: true, force: true });
      }
    });

    test('device is reachable with its permissions', async () => {
      // /dev/loop-control (10:237) is outside the default device rules, so only the request's
      // permissions "r" decide; opening it does nothing without an ioctl.
      const pod = await runPod(daemon, handler, 'devices');
      const id = await startContainer(
        daemon,
        pod,
        containerConfig('main', images.busybox, ['sleep', '1000'], {
          devices: [{ host_path: '/dev/loop-control', container_path: '/dev/berth-loop', permissions: 'r' }],
        }),
      );
      const listing = (await exec(daemon, id, ['ls', '-l', '/dev/berth-loop'])).stdout;
      assert.match(listing, /^c.* 10,\s+237 /, listing);
      assert.equal((await exec(daemon, id, ['sh', '-c', 'exec 3</dev/berth-loop'])).exitCode, 0, 'the device cannot be opened for reading');
      const write = await exec(daemon, id, ['sh', '-c', 'exec 3>/dev/berth-loop']);
      assert.notEqual(write.exitCode, 0, 'the device rule "r" allowed opening for writing');
      assert.match(write.stderr, /Operation not permitted/);
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    });

    test('image config merges with the request', async () => {
      const reference = `${images.registry.host}/runtime/configured:${handler}`;
      const script = 'trap "echo got-usr1; exit 0" USR1; while true; do sleep 0.1; done';
      const image = await runtimeImage({
        Entrypoint: ['/bin/sh', '-c'],
        Cmd: [script],
        Env: ['FROM_IMAGE=1', 'SHARED=image'],
        WorkingDir: '/home/user',
        StopSignal: 'SIGUSR1',
      });
      await pushImage(images.registry, 'runtime/configured', image, handler);
      await daemon.client.image.PullImage({ image: { image: reference } });
      const pod = await runPod(daemon, handler, 'imageconfig');

      const fromImage = await startContainer(daemon, pod, containerConfig('from-image', reference, [], { envs: [{ key: 'SHARED', value: 'request' }, { key: 'EXTRA', value: '2' }] }));
      const environment = (await exec(daemon, fromImage, ['sh', '-c', 'tr "\\0" "\\n" < /proc/1/environ'])).stdout.split('\n');
      assert.ok(environment.includes('FROM_IMAGE=1'), environment.join(' '));
      assert.ok(environment.includes('SHARED=request'), 'the request env did not override the image env');
      assert.ok(!environment.includes('SHARED=image'));
      assert.ok(environment.includes('EXTRA=2'));
      assert.equal((await exec(daemon, fromImage, ['readlink', '/proc/1/cwd'])).stdout, '/home/user\n');
      assert.equal((await exec(daemon, fromImage, ['sh', '-c', 'tr "\\0" " " < /proc/1/cmdline'])).stdout, `/bin/sh -c ${script} `);

      // StopSignal SIGUSR1 from the image ends the script with 0; SIGTERM would end it with 143.
      const started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: fromImage, timeout: 10 });
      const stopped = await waitExited(daemon, fromImage);
      assert.equal(stopped.exit_code, 0, 'the image StopSignal was not sent');
      assert.equal(stopped.reason, 'Completed');
      assert.ok(Date.now() - started < 5000, 'StopContainer waited for the timeout');
      assert.equal(stopped.stop_signal, 'SIGUSR1');

      const argsOnly = await startContainer(daemon, pod, containerConfig('args-only', reference, [], { args: ['echo args-replaced'] }));
      const commandOnly = await startContainer(daemon, pod, containerConfig('command-only', reference, ['/bin/echo', 'cmd-only']));
      for (const id of [argsOnly, commandOnly]) assert.equal((await waitExited(daemon, id)).exit_code, 0);
      const logOf = async (id: string): Promise<string> => {
        const status = await daemon.client.runtime.ContainerStatus({ container_id: id });
        return readFile(status.status!.log_path!, 'utf8');
      };
      assert.match(await logOf(argsOnly), /stdout F args-replaced$/m, 'args did not replace the image Cmd');
      const commandLog = await logOf(commandOnly);
      assert.match(commandLog, /stdout F cmd-only$/m);
      assert.doesNotMatch(commandLog, /trap/, 'the image Cmd was kept although command replaced the Entrypoint');

      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
      await daemon.client.image.RemoveImage({ image: { image: reference } });
    });

    test('pod files, sysctls and cgroup reach containers', async () => {
      const podCgroup = `${cgroupParent}/pod-context-${handler}`;
      const hostShmRmidForced = (await readFile('/proc/sys/kernel/shm_rmid_forced', 'utf8')).trim();
      const pod = await runPod(daemon, handler, 'context', {
        dns_config: { servers: ['10.96.0.10'], searches: ['shop.svc.cluster.local'], options: ['ndots:5'] },
        linux: {
          cgroup_parent: podCgroup,
          sysctls: { 'net.ipv4.ip_unprivileged_port_start': '80', 'kernel.shm_rmid_forced': hostShmRmidForced === '1' ? '0' : '1' },
        },
      });
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));

      assert.equal((await exec(daemon, id, ['cat', '/etc/resolv.conf'])).stdout, 'search shop.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n');
      assert.equal((await exec(daemon, id, ['hostname'])).stdout, 'context-host\n');
      assert.match((await exec(daemon, id, ['cat', '/etc/hosts'])).stdout, /^127\.0\.0\.1\tlocalhost$/m);

      assert.equal((await exec(daemon, id, ['cat', '/proc/sys/net/ipv4/ip_unprivileged_port_start'])).stdout, '80\n');
      assert.equal((await exec(daemon, id, ['cat', '/proc/sys/kernel/shm_rmid_forced'])).stdout.trim(), hostShmRmidForced === '1' ? '0' : '1');
      assert.equal((await readFile('/proc/sys/kernel/shm_rmid_forced', 'utf8')).trim(), hostShmRmidForced, 'the pod sysctl changed the host');

      // df reports 1024-byte blocks; the test daemon keeps the 64 MiB default shm_size.
      const shm = (await exec(daemon, id, ['df', '-k', '/dev/shm'])).stdout.trim().split('\n').at(-1)!.split(/\s+/);
      assert.equal(shm[1], String(64 * 1024), `/dev/shm: ${shm.join(' ')}`);

      const verbose = await daemon.client.runtime.ContainerStatus({ container_id: id, verbose: true });
      const cgroupsPath = (JSON.parse(verbose.info?.info ?? '{}') as { cgroupsPath: string }).cgroupsPath;
      assert.ok(cgroupsPath.startsWith(`${podCgroup}/`), `container cgroup ${cgroupsPath} is outside the pod's ${podCgroup}`);
      const layout = await detectCgroupLayout();
      const memoryRoot = layout.v1Mounts.get('memory') ?? layout.unifiedMount!;
      const processes = (await readFile(path.join(memoryRoot, cgroupsPath, 'cgroup.procs'), 'utf8')).trim().split('\n');
      assert.ok(processes.length >= 1, `no process in ${cgroupsPath}`);
      assert.notEqual(processes[0], '', `empty cgroup.procs in ${cgroupsPath}`);

      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    });

    test('tty and TARGET PID namespace', async () => {
      const pod = await runPod(daemon, handler, 'ttytarget');
      const terminal = await startContainer(
        daemon,
        pod,
        containerConfig('terminal', images.busybox, ['sh', '-c', 'if [ -t 1 ]; then echo on-a-tty; else echo no-tty; fi; sleep 1000'], { tty: true, stdin: true }),
      );
      await sleep(300);
      const terminalStatus = await daemon.client.runtime.ContainerStatus({ container_id: terminal });
      assert.match(await readFile(terminalStatus.status!.log_path!, 'utf8'), /stdout [PF] on-a-tty/);
      const plain = await exec(daemon, terminal, ['sh', '-c', 'if [ -t 1 ]; then echo tty; else echo pipe; fi']);
      assert.equal(plain.stdout, 'pipe\n', 'ExecSync output should not go through a terminal');

      // A debug container joins the PID namespace of its target, as kubectl debug --target does.
      const target = await startContainer(daemon, pod, containerConfig('target', images.busybox, ['sleep', '1003']));
      const debug = await startContainer(
        daemon,
        pod,
        containerConfig('debug', images.busybox, ['sleep', '1004'], {
          linux: { security_context: { namespace_options: { pid: 'TARGET', target_id: target } } },
        }),
      );
      const processes = (await exec(daemon, debug, ['ps', '-o', 'args'])).stdout;
      assert.match(processes, /sleep 1003/);
      assert.doesNotMatch((await exec(daemon, terminal, ['ps', '-o', 'args'])).stdout, /sleep 1003/, 'containers without TARGET share a PID namespace');

      const missing = await expectGrpcError(
        daemon.client.runtime.CreateContainer({
          pod_sandbox_id: pod.id,
          sandbox_config: pod.config,
          config: containerConfig('debug-missing', images.busybox, ['true'], {
            linux: { security_context: { namespace_options: { pid: 'TARGET', target_id: 'f'.repeat(64) } } },
          }),
        }),
      );
      assert.equal(missing.code, grpc.status.INVALID_ARGUMENT);
      assert.match(missing.details, /namespace_options\.pid: TARGET names container "f{64}", which is not in pod sandbox/);
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    });

    test('pod PID sharing through the infra container', async () => {
      const shared = { security_context: { namespace_options: { pid: 'POD' as const } } };
      const pod = await runPod(daemon, handler, 'pidshare', { linux: shared });
      const first = await startContainer(daemon, pod, containerConfig('first', images.busybox, ['sleep', '1001'], { linux: shared }));
      const second = await startContainer(daemon, pod, containerConfig('second', images.busybox, ['sleep', '1002'], { linux: shared }));

      const processes = (await exec(daemon, second, ['ps', '-o', 'args'])).stdout;
      assert.match(processes, /sleep 1001/);
      assert.match(processes, /sleep 2147483647/);
      const listed = await daemon.client.runtime.ListContainers({ filter: { pod_sandbox_id: pod.id } });
      assert.deepEqual(listed.containers?.map((container) => container.id).sort(), [first, second].sort());

      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
      assert.deepEqual(((await daemon.client.runtime.ListContainers({ filter: { pod_sandbox_id: pod.id } })).containers ?? []), []);
    });

    test('bad container input leaves nothing', async () => {
      const pod = await runPod(daemon, handler, 'badinput');
      const before = {
        records: await entries(path.join(daemon.dir, 'root/containers')),
        bundles: await entries(path.join(daemon.dir, 'run/containers')),
        mounts: await mountsUnder(daemon.dir),
      };

      const cases: { label: string; config: ReturnType<typeof containerConfig>; code: grpc.status; message: RegExp }[] = [
        { label: 'missing image', config: containerConfig('a', `${images.registry.host}/runtime/none:latest`, ['true']), code: grpc.status.NOT_FOUND, message: /not found in the image store; pull it first/ },
        { label: 'relative working dir', config: containerConfig('b', images.busybox, ['true'], { working_dir: 'relative' }), code: grpc.status.INVALID_ARGUMENT, message: /config\.working_dir: "relative"/ },
        { label: 'unknown capability', config: containerConfig('c', images.busybox, ['true'], { linux: { security_context: { capabilities: { add_capabilities: ['FLY'] } } } }), code: grpc.status.INVALID_ARGUMENT, message: /unknown capability "FLY"/ },
        { label: 'log path escape', config: containerConfig('d', images.busybox, ['true'], { log_path: '../../escape.log' }), code: grpc.status.INVALID_ARGUMENT, message: /leads outside the pod's log directory/ },
        { label: 'missing host path', config: containerConfig('e', images.busybox, ['true'], { mounts: [{ container_path: '/data', host_path: '/nonexistent/berth' }] }), code: grpc.status.INVALID_ARGUMENT, message: /config\.mounts\[0\]\.host_path: "\/nonexistent\/berth" does not exist/ },
        { label: 'unknown user', config: containerConfig('f', images.busybox, ['true'], { linux: { security_context: { run_as_username: 'ghost' } } }), code: grpc.status.INVALID_ARGUMENT, message: /run_as_username: user "ghost"/ },
        { label: 'bad env name', config: containerConfig('g', images.busybox, ['true'], { envs: [{ key: 'A=B', value: '1' }] }), code: grpc.status.INVALID_ARGUMENT, message: /config\.envs\[0\]/ },
        { label: 'not a device', config: containerConfig('h', images.busybox, ['true'], { devices: [{ host_path: '/etc/hostname', container_path: '/dev/x', permissions: 'rw' }] }), code: grpc.status.INVALID_ARGUMENT, message: /not a character or block device/ },
        { label: 'bad seccomp file', config: containerConfig('i', images.busybox, ['true'], { linux: { security_context: { seccomp: { profile_type: 'Localhost', localhost_ref: '/nonexistent.json' } } } }), code: grpc.status.INVALID_ARGUMENT, message: /cannot read seccomp profile/ },
        { label: 'oom score out of range', config: containerConfig('j', images.busybox, ['true'], { linux: { resources: { oom_score_adj: 5000 } } }), code: grpc.status.INVALID_ARGUMENT, message: /oom_score_adj: 5000 is out of range/ },
      ];
      for (const entry of cases) {
        const err = await expectGrpcError(daemon.client.runtime.CreateContainer({ pod_sandbox_id: pod.id, config: entry.config, sandbox_config: pod.config }));
        assert.equal(err.code, entry.code, `${entry.label}: ${err.details}`);
        assert.match(err.details, entry.message, entry.label);
      }

      const streaming = await expectGrpcError(daemon.client.runtime.Exec({ container_id: 'f'.repeat(64), cmd: ['sh'], stdout: true }));
      assert.equal(streaming.code, grpc.status.UNIMPLEMENTED);
      assert.match(streaming.details, /streaming server/);

      const unknownPod = await expectGrpcError(daemon.client.runtime.CreateContainer({ pod_sandbox_id: 'f'.repeat(64), config: containerConfig('k', images.busybox, ['true']) }));
      assert.equal(unknownPod.code, grpc.status.NOT_FOUND);

      assert.deepEqual(await entries(path.join(daemon.dir, 'root/containers')), before.records);
      assert.deepEqual(await entries(path.join(daemon.dir, 'run/containers')), before.bundles);
      assert.deepEqual(await mountsUnder(daemon.dir), before.mounts);
    });

    test('negative oom_score_adj is clamped', async () => {
      const pod = await runPod(daemon, handler, 'oomscore');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000'], { linux: { resources: { oom_score_adj: -998 } } }));
      const own = (await readFile('/proc/self/oom_score_adj', 'utf8')).trim();
      assert.equal((await exec(daemon, id, ['cat', '/proc/self/oom_score_adj'])).stdout.trim(), own);
      const second = await startContainer(daemon, pod, containerConfig('second', images.busybox, ['sleep', '1000'], { linux: { resources: { oom_score_adj: -999 } } }));
      assert.equal((await exec(daemon, second, ['cat', '/proc/self/oom_score_adj'])).stdout.trim(), own);
      const clampRecords = daemon.logRecords().filter((line) => String(line.msg).includes('oom_score_adj below the daemon'));
      assert.equal(clampRecords.length, 1, 'the clamp is logged once per daemon');
    });
  });
}

