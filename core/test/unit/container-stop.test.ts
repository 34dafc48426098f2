import 'reflect-metadata';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ContainerService, ContainerStore } from '../../src/container/service.js';
import type { ContainerRecord } from '../../src/container/record.js';
import type { BerthConfig } from '../../src/config/types.js';
import type { RuntimeHandlerRegistry } from '../../src/runtime/handlers.js';
import type { ContainerRuntimeState, RuntimeDriver } from '../../src/runtime/driver.js';
import { CommandError } from '../../src/util/command.js';
import { KeyedRwLock } from '../../src/util/keyed-rw-lock.js';

/** A driver whose container runs until a signal in `fatal` arrives; `failing` signals throw. */
class ScriptedDriver {
  readonly handler = 'fake';
  readonly signals: (string | number)[] = [];
  stopped = false;
  fatal = new Set<string | number>([9]);
  failing = new Set<string | number>();

  async kill(_id: string, signal: string | number): Promise<void> {
    this.signals.push(signal);
    if (this.failing.has(signal)) throw new CommandError('runc kill', 1, 'invalid signal', 'runc kill failed: invalid signal');
    if (this.fatal.has(signal)) this.stopped = true;
  }

  async state(id: string): Promise<ContainerRuntimeState> {
    return this.stopped ? { id, status: 'stopped', pid: 0, exitCode: 137, finishedAtNs: 1n } : { id, status: 'running', pid: 4242 };
  }
}

let dir: string;
let store: ContainerStore;
let driver: ScriptedDriver;
let service: ContainerService;
const lines: Record<string, unknown>[] = [];
const log = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  }),
);

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'berth-stop-'));
  store = new ContainerStore(dir, 'container');
  await store.load(log);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * Saves a running record and makes a service around a fresh scripted driver. The container
 * shares the pod's PID namespace unless `pidMode` says otherwise.
 */
async function runningContainer(stopSignal: number | string, pidMode = 'POD'): Promise<string> {
  driver = new ScriptedDriver();
  const handlers = {
    get: () => ({ name: 'fake', driver: driver as unknown as RuntimeDriver }),
    list: () => [{ name: 'fake', driver: driver as unknown as RuntimeDriver }],
  } as unknown as RuntimeHandlerRegistry;
  const config = { runtime: { restrict_oom_score_adj: false } } as unknown as BerthConfig;
  const sandboxes = { get: () => ({ id: 's', namespaces: { network: 'POD', pid: pidMode, ipc: 'POD' } }) };
  service = new ContainerService(config, handlers, sandboxes as never, store, {} as never, {} as never, new KeyedRwLock(), log);

  const id = `${Math.random().toString(16).slice(2)}`.padEnd(64, '0');
  const record = { id, sandboxId: 's', state: 'running', createdAtNs: '1', config: { metadata: { name: id } }, runtimeHandler: 'fake', stopSignal } as unknown as ContainerRecord;
  await store.save(record);
  return id;
}

test('stop sends the stored signal number', async () => {
  const id = await runningContainer(10);
  driver.fatal.add(10);
  await service.stop(id, 5, log);
  assert.deepEqual(driver.signals, [10, 9]);
  assert.equal(store.get(id)?.state, 'exited');
});

test('stop translates a name from an older record', async () => {
  const id = await runningContainer('SIGRTMIN+3');
  driver.fatal.add(37);
  await service.stop(id, 5, log);
  assert.deepEqual(driver.signals, [37, 9]);
});

test('stop with an invalid stored name sends SIGTERM', async () => {
  const id = await runningContainer('SIGFOO');
  driver.fatal.add(15);
  await service.stop(id, 5, log);
  assert.deepEqual(driver.signals, [15, 9]);
  assert.ok(lines.some((line) => line.level === 40 && line.stop_signal === 'SIGFOO'), 'no warning names SIGFOO');
});

test('stop falls back to SIGKILL when the signal fails', async () => {
  const id = await runningContainer(10);
  driver.failing.add(10);
  const started = Date.now();
  await service.stop(id, 30, log);
  assert.deepEqual(driver.signals, [10, 9]);
  assert.ok(Date.now() - started < 5000, 'SIGKILL waited for the timeout');
  assert.equal(store.get(id)?.state, 'exited');
  const warning = lines.find((line) => line.level === 40 && line.container_id === id);
  assert.match(String(warning?.msg), /failed to send the stop signal/);
  assert.ok(warning?.err, 'warning carries the error');
});

test('stop survives a failed leftover kill', async () => {
  const id = await runningContainer(15);
  driver.fatal.add(15);
  driver.failing.add(9);
  await service.stop(id, 5, log);
  assert.deepEqual(driver.signals, [15, 9]);
  assert.equal(store.get(id)?.state, 'exited');
  const warning = lines.find((line) => line.level === 40 && line.container_id === id);
  assert.match(String(warning?.msg), /failed to kill processes left/);
});

test('stop skips the leftover kill in an own PID namespace', async () => {
  const id = await runningContainer(15, 'CONTAINER');
  driver.fatal.add(15);
  await service.stop(id, 5, log);
  assert.deepEqual(driver.signals, [15]);
  assert.equal(store.get(id)?.state, 'exited');
});

test('stop kills a container that ignores its signal', async () => {
  const id = await runningContainer(15);
  await service.stop(id, 1, log);
  assert.deepEqual(driver.signals, [15, 9]);
});

test('stop with timeout 0 sends only SIGKILL', async () => {
  const id = await runningContainer(15);
  await service.stop(id, 0, log);
  assert.deepEqual(driver.signals, [9]);
});

test('stop of an exited container is a no-op', async () => {
  const id = await runningContainer(15);
  driver.stopped = true;
  await service.stop(id, 5, log);
  await service.stop(id, 0, log);
  assert.deepEqual(driver.signals, []);
  assert.equal(store.get(id)?.exitCode, 137);
});
