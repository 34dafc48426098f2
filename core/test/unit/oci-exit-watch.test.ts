import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../src/log.js';
import { OciCliDriver } from '../../src/runtime/oci-cli/driver.js';

const log = createLogger('silent');

function driverFor(dir: string): OciCliDriver {
  return new OciCliDriver({
    handler: 'test',
    runtimeName: 'runc',
    binary: '/nonexistent/runc',
    runtimeRoot: path.join(dir, 'root'),
    extraArgs: [],
    noPivot: false,
    conmon: '/nonexistent/conmon',
    exitsDir: path.join(dir, 'exits'),
    stateDir: path.join(dir, 'state'),
    createTimeoutMs: 1000,
    features: { runtime: 'runc test', pauseResume: true, updateResources: true, checkpoint: false, vm: false },
    log,
  });
}

describe('OciCliDriver.waitForExit', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function tempDir(withExits: boolean): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-exit-watch-'));
    dirs.push(dir);
    if (withExits) await mkdir(path.join(dir, 'exits'));
    return dir;
  }

  it('wakes when the exit file appears', async () => {
    const dir = await tempDir(true);
    const driver = driverFor(dir);
    try {
      const started = Date.now();
      setTimeout(() => void writeFile(path.join(dir, 'exits', 'c1'), '0'), 50);
      await driver.waitForExit('c1', 10_000);
      assert.ok(Date.now() - started < 5_000, 'waitForExit waited for its timeout');
    } finally {
      await driver.close();
    }
  });

  it('returns at once for an existing exit file', async () => {
    const dir = await tempDir(true);
    const driver = driverFor(dir);
    try {
      await writeFile(path.join(dir, 'exits', 'c2'), '137');
      const started = Date.now();
      await driver.waitForExit('c2', 10_000);
      assert.ok(Date.now() - started < 5_000, 'waitForExit waited for its timeout');
    } finally {
      await driver.close();
    }
  });

  it('ignores exit files of other containers', async () => {
    const dir = await tempDir(true);
    const driver = driverFor(dir);
    try {
      const started = Date.now();
      setTimeout(() => void writeFile(path.join(dir, 'exits', 'other'), '0'), 10);
      await driver.waitForExit('c3', 300);
      assert.ok(Date.now() - started >= 290, 'waitForExit woke for another container');
    } finally {
      await driver.close();
    }
  });

  it('sleeps the timeout without an exits directory', async () => {
    const dir = await tempDir(false);
    const driver = driverFor(dir);
    try {
      const started = Date.now();
      await driver.waitForExit('c4', 200);
      assert.ok(Date.now() - started >= 190, 'waitForExit returned before its timeout');
    } finally {
      await driver.close();
    }
  });

  it('wakes waiters when the driver closes', async () => {
    const dir = await tempDir(true);
    const driver = driverFor(dir);
    const started = Date.now();
    const waiting = driver.waitForExit('c5', 10_000);
    setTimeout(() => void driver.close(), 20);
    await waiting;
    assert.ok(Date.now() - started < 5_000, 'close did not wake the waiter');
  });
});
