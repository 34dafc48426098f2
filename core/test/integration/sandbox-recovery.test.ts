import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { entries, mountsUnder, podConfig, runtimeTestConfig } from '../support/pods.js';
import { stopRuntimeDaemon } from '../support/runtime-daemon.js';

describe('sandbox recovery', () => {
  let daemon: TestDaemon;
  let cgroupParent: string;
  let config: Record<string, unknown>;

  before(async () => {
    const setup = runtimeTestConfig();
    cgroupParent = setup.cgroupParent;
    config = setup.config;
    daemon = await TestDaemon.start({ config });
  });

  after(async () => {
    await stopRuntimeDaemon(daemon, cgroupParent);
  });

  test('half-created sandbox is undone at start-up', async () => {
    const { pod_sandbox_id: id } = await daemon.client.runtime.RunPodSandbox({ config: podConfig('crash'), runtime_handler: 'runc' });
    await daemon.kill();

    // Turn the record back into what a crash between pinning and finishing would leave.
    const recordFile = path.join(daemon.dir, 'root/sandboxes', `${id}.json`);
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as { state: string };
    record.state = 'creating';
    await writeFile(recordFile, JSON.stringify(record));
    assert.ok((await mountsUnder(path.join(daemon.dir, 'run/sandboxes', id))).length > 0);

    daemon = await TestDaemon.start({ dir: daemon.dir, config });
    assert.deepEqual(await mountsUnder(path.join(daemon.dir, 'run/sandboxes', id)), []);
    assert.ok(!(await entries(path.join(daemon.dir, 'root/sandboxes'))).includes(`${id}.json`));
    assert.ok(!(await entries(path.join(daemon.dir, 'run/sandboxes'))).includes(id));
    const err = await expectGrpcError(daemon.client.runtime.PodSandboxStatus({ pod_sandbox_id: id }));
    assert.equal(err.code, grpc.status.NOT_FOUND);
  });

  test('unreadable record is moved aside', async () => {
    await writeFile(path.join(daemon.dir, 'root/sandboxes', 'broken.json'), '{"id": ');
    await writeFile(path.join(daemon.dir, 'root/sandboxes', '.leftover.json.abc.tmp'), '{}');
    await daemon.stop();
    daemon = await TestDaemon.start({ dir: daemon.dir, config });

    const { items } = await daemon.client.runtime.ListPodSandbox({});
    assert.ok(Array.isArray(items));
    assert.ok(!(await entries(path.join(daemon.dir, 'root/sandboxes'))).includes('.leftover.json.abc.tmp'));
    assert.ok(daemon.logRecords().some((line) => String(line.msg).includes('cannot read pod sandbox record')));
    const names = await entries(path.join(daemon.dir, 'root/sandboxes'));
    assert.ok(names.includes('broken.json.corrupt'), names.join(', '));
    assert.ok(!names.includes('broken.json'), names.join(', '));
  });

  test('200 run and remove cycles leak nothing', async () => {
    const runDir = path.join(daemon.dir, 'run/sandboxes');
    const beforeMounts = await mountsUnder(daemon.dir);
    for (let cycle = 0; cycle < 200; cycle++) {
      const handler = cycle % 2 === 0 ? 'runc' : 'crun';
      const { pod_sandbox_id: id } = await daemon.client.runtime.RunPodSandbox({ config: podConfig(`cycle${cycle}`), runtime_handler: handler });
      await daemon.client.runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }

    assert.deepEqual(await mountsUnder(daemon.dir), beforeMounts);
    assert.deepEqual(await entries(runDir), []);
    assert.deepEqual((await entries(path.join(daemon.dir, 'root/sandboxes'))).filter((name) => name !== 'broken.json.corrupt'), []);
    const { items } = await daemon.client.runtime.ListPodSandbox({});
    assert.deepEqual(items, []);
  });
});
