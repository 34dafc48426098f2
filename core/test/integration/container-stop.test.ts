import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { pushImage } from '../support/registry.js';
import { runtimeImage, startRuntimeImages, type RuntimeImages } from '../support/runtime-images.js';
import { containerConfig, exec, runPod, startContainer, startRuntimeDaemon, stopRuntimeDaemon, waitExited } from '../support/runtime-daemon.js';

/** Shell loop that exits with `code` when signal `signal` (a name or number) arrives. */
function trapping(signal: string, code: number): string[] {
  return ['sh', '-c', `trap "exit ${code}" ${signal}; while true; do sleep 0.1; done`];
}

let images: RuntimeImages;
/** Images whose config sets StopSignal, by the StopSignal value. */
const stopImages: Record<string, string> = {};

before(async () => {
  images = await startRuntimeImages();
  for (const [repository, stopSignal] of [['stop-usr1', 'usr1'], ['stop-rtmin', 'SIGRTMIN+3'], ['stop-invalid', 'SIGNOPE']] as const) {
    await pushImage(images.registry, `runtime/${repository}`, await runtimeImage({ Cmd: ['sh'], StopSignal: stopSignal }), 'latest');
    stopImages[stopSignal] = `${images.registry.host}/runtime/${repository}:latest`;
  }
});

after(async () => {
  await images.stop();
});

for (const handler of ['runc', 'crun']) {
  describe(`container stop and exec on ${handler}`, () => {
    let daemon: TestDaemon;
    let cgroupParent: string;

    before(async () => {
      ({ daemon, cgroupParent } = await startRuntimeDaemon(images));
      for (const image of [images.busybox, ...Object.values(stopImages)]) await daemon.client.image.PullImage({ image: { image } });
    });

    after(async () => {
      await stopRuntimeDaemon(daemon, cgroupParent);
    });

    test('image StopSignal reaches the process', async () => {
      const pod = await runPod(daemon, handler, 'stopsignal');
      const usr1 = await startContainer(daemon, pod, containerConfig('usr1', stopImages.usr1!, trapping('USR1', 42)));
      const rtmin = await startContainer(daemon, pod, containerConfig('rtmin', stopImages['SIGRTMIN+3']!, trapping('37', 43)));
      await sleep(300);

      const usr1Status = await daemon.client.runtime.ContainerStatus({ container_id: usr1 });
      assert.equal(usr1Status.status?.stop_signal, 'SIGUSR1');
      const rtminStatus = await daemon.client.runtime.ContainerStatus({ container_id: rtmin });
      assert.equal(rtminStatus.status?.stop_signal, 'SIGRTMINPLUS3');

      const started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: usr1, timeout: 20 });
      await daemon.client.runtime.StopContainer({ container_id: rtmin, timeout: 20 });
      assert.ok(Date.now() - started < 10_000, 'a trapped stop signal waited for the timeout');
      assert.equal((await waitExited(daemon, usr1)).exit_code, 42);
      assert.equal((await waitExited(daemon, rtmin)).exit_code, 43);
    });

    test('request stop_signal overrides the image', async () => {
      const pod = await runPod(daemon, handler, 'stoprequest');
      const id = await startContainer(daemon, pod, containerConfig('usr2', stopImages.usr1!, trapping('USR2', 44), { stop_signal: 'SIGUSR2' }));
      await sleep(300);
      await daemon.client.runtime.StopContainer({ container_id: id, timeout: 20 });
      assert.equal((await waitExited(daemon, id)).exit_code, 44);

      const invalid = await expectGrpcError(
        daemon.client.runtime.CreateContainer({
          pod_sandbox_id: pod.id,
          config: containerConfig('bad', images.busybox, ['true'], { stop_signal: 99 as never }),
          sandbox_config: pod.config,
        }),
      );
      assert.equal(invalid.code, grpc.status.INVALID_ARGUMENT);
      assert.match(invalid.details, /config\.stop_signal: 99 is not a valid signal/);
    });

    test('invalid image StopSignal still stops', async () => {
      const pod = await runPod(daemon, handler, 'stopinvalid');
      const id = await startContainer(daemon, pod, containerConfig('invalid', stopImages.SIGNOPE!, ['sleep', '1000']));
      const warning = daemon.logRecords().find((line) => line.container_id === id && line.stop_signal === 'SIGNOPE');
      assert.equal(warning?.level, 'warn');
      assert.match(String(warning?.msg), /image StopSignal is not a valid signal; using SIGTERM/);
      assert.equal((await daemon.client.runtime.ContainerStatus({ container_id: id })).status?.stop_signal, 'SIGTERM');

      const started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: id, timeout: 1 });
      const waited = Date.now() - started;
      assert.ok(waited >= 900, `stop with timeout 1 took only ${waited} ms`);
      assert.ok(waited < 10_000, `stop with timeout 1 took ${waited} ms`);
      const status = await waitExited(daemon, id, 1000);
      assert.equal(status.exit_code, 137);
    });

    test('stop ends processes left in a shared PID namespace', async () => {
      const shared = { security_context: { namespace_options: { pid: 'POD' as const } } };
      const pod = await runPod(daemon, handler, 'stopshared', { linux: shared });
      const watcher = await startContainer(daemon, pod, containerConfig('watcher', images.busybox, ['sleep', '1000'], { linux: shared }));
      // The main process exits on SIGTERM, but its background child is not the PID namespace's
      // init, so the kernel does not end it.
      const graceful = await startContainer(
        daemon,
        pod,
        containerConfig('graceful', images.busybox, ['sh', '-c', 'sleep 5101 & trap "exit 0" TERM; while true; do sleep 0.1; done'], { linux: shared }),
      );
      await sleep(300);
      assert.match((await exec(daemon, watcher, ['ps', '-o', 'args'])).stdout, /sleep 5101/);

      await daemon.client.runtime.StopContainer({ container_id: graceful, timeout: 10 });
      assert.equal((await waitExited(daemon, graceful, 1000)).exit_code, 0);
      assert.doesNotMatch((await exec(daemon, watcher, ['ps', '-o', 'args'])).stdout, /sleep 5101/);

      await daemon.client.runtime.StopContainer({ container_id: graceful, timeout: 10 });
      assert.equal((await daemon.client.runtime.ContainerStatus({ container_id: graceful })).status?.exit_code, 0);
    });

    test('stop of a created container', async () => {
      const pod = await runPod(daemon, handler, 'stopcreated');
      const { container_id: id } = await daemon.client.runtime.CreateContainer({
        pod_sandbox_id: pod.id,
        config: containerConfig('created', stopImages.usr1!, ['sleep', '1000']),
        sandbox_config: pod.config,
      });

      const started = Date.now();
      await daemon.client.runtime.StopContainer({ container_id: id!, timeout: 10 });
      assert.ok(Date.now() - started < 5000, 'a created container waited for the stop timeout');
      assert.equal((await daemon.client.runtime.ContainerStatus({ container_id: id! })).status?.state, 'CONTAINER_EXITED');
      await daemon.client.runtime.StopContainer({ container_id: id!, timeout: 0 });
    });

    test('exec timeout kills forked children', async () => {
      const pod = await runPod(daemon, handler, 'exectree');
      const id = await startContainer(daemon, pod, containerConfig('main', images.busybox, ['sleep', '1000']));

      const started = Date.now();
      const err = await expectGrpcError(
        daemon.client.runtime.ExecSync({ container_id: id, cmd: ['sh', '-c', 'sleep 4101 & sleep 4102 & sleep 4103'], timeout: 1 }, { deadlineMs: 15_000 }),
      );
      assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
      assert.match(err.details, new RegExp(`command "sh" with 2 arguments in container ${id} timed out after 1 s`));
      assert.doesNotMatch(err.details, /sleep 410/);
      assert.ok(Date.now() - started < 5000, `exec with timeout 1 took ${Date.now() - started} ms`);

      let processes = '';
      for (let attempt = 0; attempt < 20; attempt++) {
        processes = (await exec(daemon, id, ['ps', '-o', 'args'])).stdout;
        if (!/sleep 410/.test(processes)) break;
        await sleep(100);
      }
      assert.doesNotMatch(processes, /sleep 410/);
      assert.match(processes, /sleep 1000/);
    });
  });
}

describe('stop signal of records from older builds', () => {
  let daemon: TestDaemon;
  let cgroupParent: string;

  before(async () => {
    ({ daemon, cgroupParent } = await startRuntimeDaemon(images));
    await daemon.client.image.PullImage({ image: { image: images.busybox } });
  });

  after(async () => {
    await stopRuntimeDaemon(daemon, cgroupParent);
  });

  test('stored names still stop', async () => {
    const containers: { handler: string; id: string; stored: string; exitCode: number }[] = [];
    for (const handler of ['runc', 'crun']) {
      const pod = await runPod(daemon, handler, `legacy-${handler}`);
      const named = await startContainer(daemon, pod, containerConfig('named', images.busybox, trapping('USR1', 42)));
      containers.push({ handler, id: named, stored: 'SIGUSR1', exitCode: 42 });
      // A stored name that is not a signal falls back to SIGTERM.
      const garbage = await startContainer(daemon, pod, containerConfig('garbage', images.busybox, trapping('TERM', 45)));
      containers.push({ handler, id: garbage, stored: 'SIGFOO', exitCode: 45 });
    }

    await daemon.kill();
    for (const container of containers) {
      const file = path.join(daemon.dir, 'root/containers', `${container.id}.json`);
      const record = JSON.parse(await readFile(file, 'utf8')) as { stopSignal: unknown };
      assert.equal(typeof record.stopSignal, 'number', 'new records store the signal number');
      record.stopSignal = container.stored;
      await writeFile(file, JSON.stringify(record));
    }
    ({ daemon } = await startRuntimeDaemon(images, { dir: daemon.dir, cgroupParent }));

    for (const container of containers) {
      await daemon.client.runtime.StopContainer({ container_id: container.id, timeout: 20 });
      const status = await waitExited(daemon, container.id, 1000);
      assert.equal(status.exit_code, container.exitCode, `${container.handler} ${container.stored}`);
    }
  });
});
