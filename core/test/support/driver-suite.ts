import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import type { ContainerRuntimeState, RuntimeDriver, RuntimeDriverFactory } from '../../src/runtime/driver.js';
import { OciCliDriver } from '../../src/runtime/oci-cli/driver.js';
import { detectCgroupLayout } from '../../src/cgroups/layout.js';
import { BundleWorkspace } from './bundle.js';

const log = pino({ level: 'silent' });

/** One CRI log record: `<RFC 3339 nano time> <stream> <P|F> <message>`. */
export const CRI_LOG_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$/;

export function newId(): string {
  return randomBytes(32).toString('hex');
}

/** Polls the driver until the container has stopped; fails after `timeoutMs`. */
export async function waitStopped(driver: RuntimeDriver, id: string, timeoutMs = 10_000): Promise<ContainerRuntimeState> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await driver.state(id);
    if (state.status === 'stopped' && state.exitCode !== undefined) return state;
    if (Date.now() > deadline) throw new Error(`container ${id} still ${state.status} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * Driver-level tests shared by the OCI-CLI driver plugins: real runtime, real conmon, bundles
 * built from busybox. `factory` is the plugin's default export.
 */
export function runOciCliDriverSuite(runtimeName: string, factory: RuntimeDriverFactory): void {
  describe(`${runtimeName} driver`, () => {
    let workspace: BundleWorkspace;
    let stateDir: string;
    let exitsDir: string;
    let driver: OciCliDriver;
    const created: string[] = [];

    const makeDriver = async (): Promise<OciCliDriver> =>
      (await factory.create({}, { handler: runtimeName, stateDir, exitsDir, conmonPath: '', log })) as OciCliDriver;

    const createContainer = async (args: string[], options: { logPath?: string; edit?: Parameters<BundleWorkspace['bundle']>[2] } = {}): Promise<string> => {
      const id = newId();
      const bundlePath = await workspace.bundle(id, args, options.edit);
      created.push(id);
      await driver.create({ id, sandboxId: 'sandbox', bundlePath, logPath: options.logPath, stdin: false, stdinOnce: false, tty: false, log });
      return id;
    };

    before(async () => {
      workspace = await BundleWorkspace.create();
      stateDir = path.join(workspace.dir, 'state');
      exitsDir = path.join(workspace.dir, 'exits');
      driver = await makeDriver();
    });

    after(async () => {
      for (const id of created) await driver.delete(id, log).catch(() => undefined);
      await workspace.cleanup();
    });

    test('missing binary fails start-up', async () => {
      await assert.rejects(
        factory.create(
          { binary_path: '/nonexistent/runtime' },
          { handler: 'broken', stateDir: path.join(workspace.dir, 'broken'), exitsDir, conmonPath: '', log },
        ),
        /binary_path: \/nonexistent\/runtime is not an executable file/,
      );
    });

    test('features report the version', async () => {
      const features = await driver.features();
      assert.match(features.runtime, new RegExp(`^${runtimeName} \\d`));
      assert.equal(features.vm, false);
    });

    test('exit code, finish time and CRI log', async () => {
      const logPath = path.join(workspace.dir, `${newId()}.log`);
      const id = await createContainer(['sh', '-c', 'echo out; echo err >&2; exit 3'], { logPath });

      const createdState = await driver.state(id);
      assert.equal(createdState.status, 'created');
      assert.ok(createdState.pid > 0);

      const before = process.hrtime.bigint();
      await driver.start(id, log);
      const stopped = await waitStopped(driver, id);
      assert.equal(stopped.exitCode, 3);
      assert.equal(stopped.oomKilled, false);
      assert.ok(stopped.finishedAtNs !== undefined && stopped.finishedAtNs > 0n);
      assert.ok(before > 0n);

      const lines = (await readFile(logPath, 'utf8')).trimEnd().split('\n');
      const records = lines.map((line) => CRI_LOG_LINE.exec(line));
      assert.ok(records.every((record) => record !== null), `not CRI format: ${lines.join(' | ')}`);
      assert.deepEqual(
        records.map((record) => [record![2], record![3], record![4]]).sort(),
        [['stderr', 'F', 'err'], ['stdout', 'F', 'out']],
      );
    });

    test('long line is split into partial records', async () => {
      const logPath = path.join(workspace.dir, `${newId()}.log`);
      const id = await createContainer(['sh', '-c', 'head -c 20000 /dev/zero | tr "\\0" a; echo; echo next'], { logPath });
      await driver.start(id, log);
      await waitStopped(driver, id);

      const records = (await readFile(logPath, 'utf8')).trimEnd().split('\n').map((line) => CRI_LOG_LINE.exec(line)!);
      const partial = records.filter((record) => record[3] === 'P');
      assert.ok(partial.length >= 1, 'expected at least one P record');
      const full = records.findIndex((record) => record[3] === 'F');
      assert.equal(records.slice(0, full + 1).map((record) => record[4]).join(''), 'a'.repeat(20000));
      assert.equal(records[full + 1]?.[4], 'next');
    });

    test('execSync output, exit code and limits', async () => {
      const id = await createContainer(['sleep', '1000']);
      await driver.start(id, log);

      const result = await driver.execSync(id, { cmd: ['sh', '-c', 'echo hi; echo oops >&2; exit 7'], timeoutMs: 10_000, maxOutputBytes: 1024, log });
      assert.equal(result.stdout.toString(), 'hi\n');
      assert.equal(result.stderr.toString(), 'oops\n');
      assert.equal(result.exitCode, 7);
      assert.equal(result.timedOut, false);

      const capped = await driver.execSync(id, { cmd: ['sh', '-c', 'yes | head -c 100000'], timeoutMs: 10_000, maxOutputBytes: 1024, log });
      assert.equal(capped.stdout.length, 1024);
      assert.equal(capped.truncated, true);

      const started = Date.now();
      const slow = await driver.execSync(id, { cmd: ['sleep', '37'], timeoutMs: 500, maxOutputBytes: 1024, log });
      assert.equal(slow.timedOut, true);
      assert.ok(Date.now() - started < 5000, 'timeout was not enforced');
      const ps = await driver.execSync(id, { cmd: ['ps', '-o', 'args'], timeoutMs: 10_000, maxOutputBytes: 65536, log });
      assert.doesNotMatch(ps.stdout.toString(), /sleep 37/);

      await driver.kill(id, 'SIGKILL', log);
      assert.equal((await waitStopped(driver, id)).exitCode, 137);
      await assert.rejects(driver.execSync(id, { cmd: ['true'], timeoutMs: 1000, maxOutputBytes: 1024, log }), /not running/);
    });

    test('kill of a stopped container is a no-op', async () => {
      const id = await createContainer(['true']);
      await driver.start(id, log);
      await waitStopped(driver, id);
      await driver.kill(id, 'SIGTERM', log);
      assert.equal((await driver.state(id)).status, 'stopped');
    });

    test('memory limit ends in OOM kill', async () => {
      const id = await createContainer(['sh', '-c', 'dd if=/dev/zero of=/dev/null bs=256M count=1'], {
        edit: (spec) => {
          spec.linux!.resources!.memory = { limit: 16 * 1024 * 1024, swap: 16 * 1024 * 1024 };
        },
      });
      await driver.start(id, log);
      const stopped = await waitStopped(driver, id);
      assert.equal(stopped.exitCode, 137);
      assert.equal(stopped.oomKilled, true);
    });

    test('updateResources changes the memory limit', async () => {
      const id = await createContainer(['sleep', '1000']);
      await driver.start(id, log);
      await driver.updateResources(id, { memory: { limit: 64 * 1024 * 1024 } }, log);

      const layout = await detectCgroupLayout();
      const file = layout.v1Mounts.has('memory')
        ? path.join(layout.v1Mounts.get('memory')!, workspace.cgroupParent, id, 'memory.limit_in_bytes')
        : path.join(layout.unifiedMount!, workspace.cgroupParent, id, 'memory.max');
      assert.equal((await readFile(file, 'utf8')).trim(), String(64 * 1024 * 1024));
      await driver.kill(id, 'SIGKILL', log);
      await waitStopped(driver, id);
    });

    test('reopenLog starts a new log file', async () => {
      const logPath = path.join(workspace.dir, `${newId()}.log`);
      const id = await createContainer(['sh', '-c', 'echo first; sleep 1; echo second; sleep 1000'], { logPath });
      await driver.start(id, log);
      await sleep(300);
      await rename(logPath, `${logPath}.1`);
      await driver.reopenLog(id, log);
      await sleep(1500);

      assert.match(await readFile(`${logPath}.1`, 'utf8'), /stdout F first/);
      assert.match(await readFile(logPath, 'utf8'), /stdout F second/);
      await driver.kill(id, 'SIGKILL', log);
      await waitStopped(driver, id);
    });

    test('new driver instance recovers state', async () => {
      const id = await createContainer(['sh', '-c', 'sleep 1; exit 5']);
      await driver.start(id, log);
      const second = await makeDriver();
      assert.equal((await second.state(id)).status, 'running');
      assert.equal((await waitStopped(second, id)).exitCode, 5);
    });

    test('failed create leaves nothing behind', async () => {
      const id = newId();
      const bundlePath = await workspace.bundle(id, ['true'], (spec) => {
        spec.mounts!.push({ destination: '/mnt', type: 'bind', source: '/nonexistent/source', options: ['rbind'] });
      });
      await assert.rejects(
        driver.create({ id, sandboxId: 'sandbox', bundlePath, stdin: false, stdinOnce: false, tty: false, log }),
        new RegExp(`${runtimeName} create of container ${id} failed`),
      );
      await assert.rejects(driver.state(id), /not found/);
      assert.deepEqual(await conmonProcessesFor(id), []);
      await assert.rejects(stat(path.join(stateDir, 'containers', id)), /ENOENT/);
    });

    test('delete removes monitor, state and cgroup', async () => {
      const id = await createContainer(['sleep', '1000']);
      await driver.start(id, log);
      const monitorPid = await driver.monitorPid(id);
      assert.ok(monitorPid !== undefined);
      const socketLink = path.join(stateDir, 'sockets', id);
      assert.ok((await lstat(socketLink)).isSymbolicLink(), 'conmon links the attach socket directory');

      await driver.kill(id, 'SIGKILL', log);
      await waitStopped(driver, id);
      await driver.delete(id, log);
      await driver.delete(id, log);

      await assert.rejects(driver.state(id), /not found/);
      assert.deepEqual(await waitNoConmon(id), []);
      assert.deepEqual((await workspace.leftoverCgroups()).filter((dir) => dir.endsWith(id)), []);
      await assert.rejects(stat(path.join(exitsDir, id)), /ENOENT/);
      await assert.rejects(lstat(socketLink), /ENOENT/);
    });

    test('delete of a created container', async () => {
      const id = await createContainer(['sleep', '1000']);
      await driver.delete(id, log);
      assert.deepEqual(await waitNoConmon(id), []);
      await assert.rejects(driver.state(id), /not found/);
      await assert.rejects(lstat(path.join(stateDir, 'sockets', id)), /ENOENT/);
    });
  });
}

/** Waits up to `timeoutMs` for the container's conmon to end; returns the PIDs still alive. */
export async function waitNoConmon(id: string, timeoutMs = 5000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await conmonProcessesFor(id);
    if (pids.length === 0 || Date.now() > deadline) return pids;
    await sleep(100);
  }
}

/** PIDs of live conmon processes whose command line names the container. */
export async function conmonProcessesFor(id: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      const status = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (cmdline.includes('conmon') && cmdline.includes(id) && !/\) Z /.test(status)) pids.push(Number(entry));
    } catch {
      // The process exited while the list was read.
    }
  }
  return pids;
}

export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
