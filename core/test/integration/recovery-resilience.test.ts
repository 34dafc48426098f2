import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { TestDaemon } from '../support/daemon.js';
import { entries, mountsUnder } from '../support/pods.js';
import { startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { containerConfig, runPod, startContainer, startRuntimeDaemon, stopRuntimeDaemon, waitExited } from '../support/runtime-daemon.js';

describe('recovery resilience', () => {
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

  test('corrupt record and dropped handler', async () => {
    const podA = await runPod(daemon, 'runc', 'kept');
    const running = await startContainer(daemon, podA, containerConfig('running', images.busybox, ['sleep', '1000']));
    const exited = await startContainer(daemon, podA, containerConfig('exited', images.busybox, ['sh', '-c', 'exit 3']));
    await waitExited(daemon, exited);

    // The crun container exits while the daemon is down, so its record still has state running.
    const podB = await runPod(daemon, 'crun', 'dropped');
    const orphaned = await startContainer(daemon, podB, containerConfig('orphaned', images.busybox, ['sh', '-c', 'sleep 2; exit 4']));

    const podC = await runPod(daemon, 'runc', 'corrupt');
    const corrupt = await startContainer(daemon, podC, containerConfig('corrupt', images.busybox, ['sleep', '1000']));

    await daemon.stop();
    const containersDir = path.join(daemon.dir, 'root/containers');
    await writeFile(path.join(containersDir, `${corrupt}.json`), '{"id": "');
    // Pod C now looks half-created, and releasing it fails: its cgroup still contains the process
    // of the container whose record is lost.
    const podCFile = path.join(daemon.dir, 'root/sandboxes', `${podC.id}.json`);
    const podCRecord = JSON.parse(await readFile(podCFile, 'utf8')) as { state: string };
    podCRecord.state = 'creating';
    await writeFile(podCFile, JSON.stringify(podCRecord));
    await sleep(3000);

    ({ daemon } = await startRuntimeDaemon(images, {
      dir: daemon.dir,
      cgroupParent,
      config: { runtimes: { runc: { driver: 'runc', options: {} } } },
    }));

    // The corrupt record is moved aside and logged.
    const records = await entries(containersDir);
    assert.ok(records.includes(`${corrupt}.json.corrupt`), records.join(', '));
    assert.ok(!records.includes(`${corrupt}.json`), records.join(', '));
    const logs = daemon.logRecords();
    assert.ok(
      logs.some((line) => line.level === 'error' && line.moved_to === path.join(containersDir, `${corrupt}.json.corrupt`)),
      'no error logged for the corrupt record',
    );
    assert.ok(
      logs.some((line) => line.level === 'error' && line.container_id === orphaned && String(line.msg).includes('no longer configured')),
      'no error logged for the container whose handler is gone',
    );
    assert.ok(
      logs.some((line) => line.level === 'error' && line.sandbox_id === podC.id && String(line.msg).includes('cannot recover the pod sandbox')),
      'no error logged for the pod whose release failed',
    );

    const { items } = await daemon.client.runtime.ListPodSandbox({});
    const pods = new Map(items?.map((item) => [item.id, item.state]));
    assert.equal(pods.get(podA.id), 'SANDBOX_READY');
    assert.equal(pods.get(podB.id), 'SANDBOX_NOTREADY');
    assert.equal(pods.get(podC.id), 'SANDBOX_NOTREADY');

    const { containers } = await daemon.client.runtime.ListContainers({});
    const states = new Map(containers?.map((container) => [container.id, container.state]));
    assert.equal(states.get(running), 'CONTAINER_RUNNING');
    assert.equal(states.get(exited), 'CONTAINER_EXITED');
    assert.equal(states.get(orphaned), 'CONTAINER_EXITED');
    assert.equal(states.has(corrupt), false);

    const { status: exitedStatus } = await daemon.client.runtime.ContainerStatus({ container_id: exited });
    assert.equal(exitedStatus?.exit_code, 3);
    const { status: orphanedStatus } = await daemon.client.runtime.ContainerStatus({ container_id: orphaned });
    assert.equal(orphanedStatus?.reason, 'Unknown');
    assert.match(orphanedStatus?.message ?? '', /runtime handler "crun" is no longer configured/);

    // Every listed pod and container can be stopped and removed.
    await daemon.client.runtime.StopContainer({ container_id: orphaned, timeout: 0 });
    for (const pod of [podA, podB, podC]) await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
    assert.equal((await waitExited(daemon, running, 5000)).state, 'CONTAINER_EXITED');
    await daemon.client.runtime.RemoveContainer({ container_id: orphaned });
    assert.ok(
      daemon.logRecords().some((line) => line.container_id === orphaned && line.runtime_state_dir === path.join(daemon.dir, 'run/runtimes/crun')),
      'removal did not log the runtime state it left',
    );

    // The container whose record was lost still runs in pod C; only the runtime can end it.
    await execa('runc', ['--root', path.join(daemon.dir, 'run/runtimes/runc/root'), 'delete', '--force', corrupt]);
    for (const pod of [podA, podB, podC]) await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });

    assert.deepEqual((await daemon.client.runtime.ListPodSandbox({})).items, []);
    assert.deepEqual((await daemon.client.runtime.ListContainers({})).containers, []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'root/sandboxes')), []);
    assert.deepEqual(await entries(containersDir), [`${corrupt}.json.corrupt`]);
    const mounts = await mountsUnder(daemon.dir);
    for (const id of [running, exited, orphaned]) assert.ok(!mounts.some((mount) => mount.includes(id)), `mount of ${id} is left`);
  });
});
