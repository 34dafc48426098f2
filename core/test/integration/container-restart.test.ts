import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { waitNoConmon } from '../support/driver-suite.js';
import { cgroupsUnder, entries, mountsUnder } from '../support/pods.js';
import { startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { containerConfig, runPod, startContainer, startRuntimeDaemon, stopRuntimeDaemon, waitExited } from '../support/runtime-daemon.js';

describe('container restart and leaks', () => {
  let images: RuntimeImages;
  let daemon: TestDaemon;
  let cgroupParent: string;

  before(async () => {
    images = await startRuntimeImages();
    ({ daemon, cgroupParent } = await startRuntimeDaemon(images));
    await daemon.client.image.PullImage({ image: { image: images.busybox } });
  });

  after(async () => {
    await stopRuntimeDaemon(daemon, cgroupParent);
    await images.stop();
  });

  test('ten pods survive a kill -9', async () => {
    const pods: { id: string; container: string }[] = [];
    for (let index = 0; index < 10; index++) {
      const handler = index % 2 === 0 ? 'runc' : 'crun';
      const pod = await runPod(daemon, handler, `restart${index}`);
      // The last container exits with code 7 about 2 s after its start, while the daemon is down.
      const command = index === 9 ? ['sh', '-c', 'sleep 2; exit 7'] : ['sleep', '1000'];
      pods.push({ id: pod.id, container: await startContainer(daemon, pod, containerConfig('main', images.busybox, command)) });
    }

    await daemon.kill();
    await sleep(3000);
    ({ daemon } = await startRuntimeDaemon(images, { dir: daemon.dir, cgroupParent }));

    const { items } = await daemon.client.runtime.ListPodSandbox({});
    assert.deepEqual(items?.map((item) => item.id).sort(), pods.map((pod) => pod.id).sort());
    assert.ok(items?.every((item) => item.state === 'SANDBOX_READY'));

    const { containers } = await daemon.client.runtime.ListContainers({});
    const states = new Map(containers?.map((container) => [container.id, container.state]));
    assert.equal(states.get(pods[9]!.container), 'CONTAINER_EXITED');
    for (const pod of pods.slice(0, 9)) assert.equal(states.get(pod.container), 'CONTAINER_RUNNING', pod.container);

    const exited = await waitExited(daemon, pods[9]!.container, 1000);
    assert.equal(exited.exit_code, 7);
    assert.equal(exited.reason, 'Error');
    // The finish time comes from the monitor's exit file, not from the recovery 3 s or more later.
    const runMs = Number((BigInt(exited.finished_at!) - BigInt(exited.started_at!)) / 1_000_000n);
    assert.ok(runMs >= 1900, `finished ${runMs} ms after the start`);
    assert.ok(runMs < 2900, `finished ${runMs} ms after the start; the recovery time was used`);

    for (const pod of pods) {
      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
      assert.equal((await waitExited(daemon, pod.container, 5000)).state, 'CONTAINER_EXITED');
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    }
    assert.deepEqual((await daemon.client.runtime.ListPodSandbox({})).items, []);
  });

  test('containers outlive a graceful stop', async () => {
    const pods: { id: string; container: string }[] = [];
    for (const handler of ['runc', 'crun']) {
      const pod = await runPod(daemon, handler, `graceful-${handler}`);
      const container = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sh', '-c', 'while true; do echo tick; sleep 0.2; done']));
      pods.push({ id: pod.id, container });
    }
    const logPath = (await daemon.client.runtime.ContainerStatus({ container_id: pods[0]!.container })).status!.log_path!;

    // SIGTERM, as systemd sends on a restart of the service.
    assert.equal(await daemon.stop(), 0);
    const sizeWhileDown = (await readFile(logPath)).length;
    await sleep(800);
    assert.ok((await readFile(logPath)).length > sizeWhileDown, 'the container stopped logging while the daemon was down');

    ({ daemon } = await startRuntimeDaemon(images, { dir: daemon.dir, cgroupParent }));
    for (const pod of pods) {
      const status = await daemon.client.runtime.ContainerStatus({ container_id: pod.container });
      assert.equal(status.status?.state, 'CONTAINER_RUNNING', pod.container);
      const result = await daemon.client.runtime.ExecSync({ container_id: pod.container, cmd: ['echo', 'alive'], timeout: 10 });
      assert.equal(Buffer.from(result.stdout ?? []).toString(), 'alive\n');
    }
    for (const pod of pods) await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('half-created container is undone at start-up', async () => {
    const pod = await runPod(daemon, 'runc', 'halfway');
    const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));
    await daemon.kill();

    const recordFile = path.join(daemon.dir, 'root/containers', `${id}.json`);
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as { state: string };
    record.state = 'creating';
    await writeFile(recordFile, JSON.stringify(record));

    ({ daemon } = await startRuntimeDaemon(images, { dir: daemon.dir, cgroupParent }));
    assert.ok(!(await entries(path.join(daemon.dir, 'root/containers'))).includes(`${id}.json`));
    assert.ok(!(await entries(path.join(daemon.dir, 'run/containers'))).includes(id));
    assert.deepEqual(await waitNoConmon(id), []);
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('200 pod and container cycles leak nothing', async () => {
    const beforeMounts = await mountsUnder(daemon.dir);
    const ids: string[] = [];
    for (let cycle = 0; cycle < 200; cycle++) {
      const handler = cycle % 2 === 0 ? 'runc' : 'crun';
      const pod = await runPod(daemon, handler, `leak${cycle}`);
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));
      ids.push(id);
      await daemon.client.runtime.StopContainer({ container_id: id, timeout: 0 });
      await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
    }

    assert.deepEqual(await mountsUnder(daemon.dir), beforeMounts);
    assert.deepEqual(await entries(path.join(daemon.dir, 'run/sandboxes')), []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'run/containers')), []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'root/sandboxes')), []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'root/containers')), []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'run/exits')), []);
    for (const handler of ['runc', 'crun']) {
      assert.deepEqual(await entries(path.join(daemon.dir, 'run/runtimes', handler, 'containers')), [], handler);
      assert.deepEqual(await entries(path.join(daemon.dir, 'run/runtimes', handler, 'sockets')), [], `${handler} attach socket links`);
    }
    assert.deepEqual(await cgroupsUnder(cgroupParent), []);

    await sleep(3500);
    for (const id of ids) assert.deepEqual(await waitNoConmon(id, 100), [], `conmon of ${id}`);
  });
});
