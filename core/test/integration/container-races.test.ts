import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { conmonProcessesFor } from '../support/driver-suite.js';
import { cgroupsUnder, entries, mountsUnder } from '../support/pods.js';
import { startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { containerConfig, runPod, startContainer, startRuntimeDaemon, stopRuntimeDaemon } from '../support/runtime-daemon.js';

describe('container races', () => {
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

  test('ListContainers during RemoveContainer leaves no ghosts', async () => {
    const pod = await runPod(daemon, 'runc', 'ghosts');
    const removed: string[] = [];

    for (let round = 0; round < 4; round++) {
      // Containers that exit at once. No status call has recorded the exit yet, so a listing
      // persists their final state one by one, from a snapshot taken before the removals.
      const ids: string[] = [];
      for (let index = 0; index < 10; index++) {
        ids.push(await startContainer(daemon, pod, containerConfig(`r${round}c${index}`, images.busybox, ['true'])));
      }
      await sleep(500);

      let listing = true;
      const lister = (async () => {
        while (listing) await daemon.client.runtime.ListContainers({});
      })();
      try {
        // The listing refreshes in creation order, so the last containers are removed first.
        await Promise.all([...ids].reverse().map((id) => daemon.client.runtime.RemoveContainer({ container_id: id })));
      } finally {
        listing = false;
        await lister;
      }
      removed.push(...ids);

      // Listings that started before the removals finished may still be writing.
      const { containers } = await daemon.client.runtime.ListContainers({});
      const listed = new Set(containers?.map((container) => container.id));
      for (const id of ids) assert.ok(!listed.has(id), `round ${round}: removed container ${id} is listed`);
    }

    await sleep(200);
    const records = await entries(path.join(daemon.dir, 'root/containers'));
    for (const id of removed) assert.ok(!records.includes(`${id}.json`), `record of removed container ${id} is on disk`);

    await daemon.stop();
    ({ daemon } = await startRuntimeDaemon(images, { dir: daemon.dir, cgroupParent }));
    const { containers } = await daemon.client.runtime.ListContainers({});
    const listed = new Set(containers?.map((container) => container.id));
    for (const id of removed) assert.ok(!listed.has(id), `removed container ${id} is listed after a restart`);

    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });

  test('CreateContainer during pod teardown leaves nothing', async () => {
    const mountsBefore = await mountsUnder(daemon.dir);
    const outcomes = new Map<string, number>();
    const count = (outcome: string): void => {
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    };

    for (let round = 0; round < 16; round++) {
      const handler = round % 2 === 0 ? 'runc' : 'crun';
      // Even rounds stop the pod while the creates run and remove it afterwards; odd rounds remove it at once.
      const stopFirst = round % 4 < 2;
      const pod = await runPod(daemon, handler, `teardown${round}`);
      const logDirectory = pod.config.log_directory!;

      const creates = Array.from({ length: 3 }, async (_, index) => {
        try {
          const { container_id: id } = await daemon.client.runtime.CreateContainer({
            pod_sandbox_id: pod.id,
            config: containerConfig(`c${index}`, images.busybox, ['sleep', '1000']),
            sandbox_config: pod.config,
          });
          await daemon.client.runtime.StartContainer({ container_id: id! });
          count('started');
        } catch (err) {
          const code = (err as grpc.ServiceError).code;
          assert.ok(
            code === grpc.status.NOT_FOUND || code === grpc.status.FAILED_PRECONDITION,
            `round ${round}: create or start failed with ${String(code)}: ${(err as Error).message}`,
          );
          count(grpc.status[code]);
        }
      });
      const teardown = (async () => {
        // Vary the moment of the teardown: before, during and after the creates.
        await sleep((round % 8) * 30);
        await daemon.client.runtime[stopFirst ? 'StopPodSandbox' : 'RemovePodSandbox']({ pod_sandbox_id: pod.id });
      })();
      await Promise.all([...creates, teardown]);

      if (stopFirst) {
        const { containers } = await daemon.client.runtime.ListContainers({ filter: { pod_sandbox_id: pod.id } });
        const running = (containers ?? []).filter((container) => container.state !== 'CONTAINER_EXITED');
        assert.deepEqual(running, [], `round ${round}: containers of the stopped pod are not exited`);
        await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
      }

      const { containers } = await daemon.client.runtime.ListContainers({ filter: { pod_sandbox_id: pod.id } });
      assert.deepEqual(containers, [], `round ${round}: containers of the removed pod are listed`);
      const { items } = await daemon.client.runtime.ListPodSandbox({ filter: { id: pod.id } });
      assert.deepEqual(items, [], `round ${round}: the removed pod is listed`);
      const podCgroups = (await cgroupsUnder(cgroupParent)).filter((dir) => dir.includes(pod.id));
      assert.deepEqual(podCgroups, [], `round ${round}: cgroups of the removed pod`);
      assert.deepEqual(await conmonProcessesFor(logDirectory), [], `round ${round}: conmon of the removed pod`);
    }

    assert.deepEqual(await entries(path.join(daemon.dir, 'root/containers')), []);
    assert.deepEqual(await entries(path.join(daemon.dir, 'run/containers')), []);
    assert.deepEqual(await mountsUnder(daemon.dir), mountsBefore);
    // Diagnostic only: which outcomes the timing produced.
    console.log('create outcomes', Object.fromEntries(outcomes));
  });

  test('CreateContainer in stopped pod names its state', async () => {
    const pod = await runPod(daemon, 'runc', 'stopped');
    await daemon.client.runtime.StopPodSandbox({ pod_sandbox_id: pod.id });

    const err = await expectGrpcError(
      daemon.client.runtime.CreateContainer({ pod_sandbox_id: pod.id, config: containerConfig('late', images.busybox, ['true']), sandbox_config: pod.config }),
    );
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, new RegExp(`pod sandbox ${pod.id} is notready`));
    await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
  });
});
