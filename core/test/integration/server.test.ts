import 'reflect-metadata';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon } from '../support/daemon.js';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import { installVendorPlugin, vendorRuntimeConfig } from '../support/fixtures.js';

let pluginDir: string;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  pluginDir = await installVendorPlugin();
  cleanups.push(() => rm(path.dirname(pluginDir), { recursive: true, force: true }));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function startDaemon(dir?: string): Promise<TestDaemon> {
  const daemon = await TestDaemon.start({ config: vendorRuntimeConfig(pluginDir), dir });
  cleanups.push(() => daemon.cleanup());
  return daemon;
}

describe('CRI server', () => {
  it('answers Version', async () => {
    const daemon = await startDaemon();
    const version = await daemon.client.runtime.Version({ version: '0.1.0' });
    assert.equal(version.runtime_name, 'berth');
    assert.equal(version.runtime_api_version, 'v1');
    assert.match(version.runtime_version ?? '', /^\d+\.\d+\.\d+/);
  });

  it('reports Status conditions with reasons', async () => {
    const daemon = await startDaemon();
    const status = await daemon.client.runtime.Status({});
    const conditions = status.status?.conditions ?? [];

    const runtimeReady = conditions.find((condition) => condition.type === 'RuntimeReady');
    assert.equal(runtimeReady?.status, true);

    const networkReady = conditions.find((condition) => condition.type === 'NetworkReady');
    assert.equal(networkReady?.status, false);
    assert.equal(networkReady?.reason, 'NetworkProviderNotConfigured');
    assert.match(networkReady?.message ?? '', /network\.provider is empty/);
    assert.deepEqual(status.info, {}, 'info is filled only for verbose requests');
  });

  it('reports the cgroup driver in RuntimeConfig', async () => {
    const daemon = await startDaemon();
    const config = await daemon.client.runtime.RuntimeConfig({});
    assert.equal(config.linux?.cgroup_driver, 'CGROUPFS');
  });

  it('returns UNIMPLEMENTED naming the RPC', async () => {
    const daemon = await startDaemon();
    const err = await expectGrpcError(daemon.client.runtime.CheckpointContainer({ container_id: 'abc' }));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.match(err.details, /\/runtime\.v1\.RuntimeService\/CheckpointContainer is not implemented/);
  });

  it('logs each request at debug with its RPC name and ids', async () => {
    const daemon = await startDaemon();
    await expectGrpcError(daemon.client.runtime.CheckpointContainer({ container_id: 'c0ffee' }));
    const record = await daemon.waitForLog(
      (entry) => entry.msg === 'request' && entry.rpc === '/runtime.v1.RuntimeService/CheckpointContainer',
    );
    assert.equal(record.level, 'debug');
    assert.equal(record.container_id, 'c0ffee');
  });

  it('logs an unimplemented Exec at warn', async () => {
    const daemon = await startDaemon();
    const err = await expectGrpcError(daemon.client.runtime.Exec({ container_id: 'c0ffee', cmd: ['sh'], stdout: true }));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    const record = await daemon.waitForLog((entry) => entry.msg === 'request not supported by berth' && entry.container_id === 'c0ffee');
    assert.equal(record.level, 'warn');
    assert.equal(record.code, 'UNIMPLEMENTED');
  });

  it('creates the socket with mode 0660', async () => {
    const daemon = await startDaemon();
    const info = await stat(daemon.socket);
    assert.ok(info.isSocket());
    assert.equal(info.mode & 0o777, 0o660);
  });

  it('creates missing socket parent directories', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-test-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const socket = path.join(dir, 'run', 'nested', 'berth.sock');
    const daemon = await TestDaemon.start({ config: { ...vendorRuntimeConfig(pluginDir), listen: socket }, dir });
    cleanups.push(() => daemon.cleanup());

    assert.equal(daemon.socket, socket);
    assert.ok((await stat(socket)).isSocket());
    assert.equal((await stat(socket)).mode & 0o777, 0o660);
    const version = await daemon.client.runtime.Version({});
    assert.equal(version.runtime_name, 'berth');
  });

  it('refuses a socket held by a live daemon', async () => {
    const first = await startDaemon();
    const err = await TestDaemon.start({ config: vendorRuntimeConfig(pluginDir), dir: first.dir }).then(
      () => new Error('second daemon started'),
      (error: Error) => error,
    );
    assert.match(err.message, /exited with code 1/);
    assert.match(err.message, new RegExp(`socket ${first.socket} is in use by a running process`));

    const version = await first.client.runtime.Version({});
    assert.equal(version.runtime_name, 'berth', 'the first daemon keeps serving');
  });

  it('refuses state directories held by a live daemon', async () => {
    const first = await startDaemon();
    const otherSocket = path.join(first.dir, 'second.sock');
    const err = await TestDaemon.start({ config: { ...vendorRuntimeConfig(pluginDir), listen: otherSocket }, dir: first.dir }).then(
      () => new Error('second daemon started'),
      (error: Error) => error,
    );
    assert.match(err.message, /exited with code 1/);
    assert.match(err.message, new RegExp(`state directory ${first.dir}/root is in use by berth process ${first.process.pid}`));
    assert.doesNotMatch(err.message, /CRI server listening/, 'the second daemon never served');

    const version = await first.client.runtime.Version({});
    assert.equal(version.runtime_name, 'berth', 'the first daemon keeps serving');
  });

  it('replaces a stale socket left by a killed daemon', async () => {
    const first = await startDaemon();
    await first.kill();
    assert.ok((await stat(first.socket)).isSocket(), 'the killed daemon left its socket file');

    const second = await startDaemon(first.dir);
    const version = await second.client.runtime.Version({});
    assert.equal(version.runtime_name, 'berth');
  });

  it('refuses a listen path that is not a socket', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-test-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 'berth.sock'), 'not a socket');

    const err = await TestDaemon.start({ config: vendorRuntimeConfig(pluginDir), dir }).then(
      () => new Error('daemon started'),
      (error: Error) => error,
    );
    assert.match(err.message, /the path exists and is not a socket/);
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`exits 0 on ${signal} and removes its socket`, async () => {
      const daemon = await startDaemon();
      daemon.process.kill(signal);
      // Waiting for the record first keeps stop() from racing a SIGTERM against this signal.
      await daemon.waitForLog((record) => record.msg === 'shutting down' && record.signal === signal);
      const code = await daemon.stop();
      assert.equal(code, 0);
      await assert.rejects(stat(daemon.socket), { code: 'ENOENT' });
    });
  }
});
