import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { killProcessTree } from '../../src/util/process-tree.js';

const log = pino({ level: 'silent' });

/** Descendants of `pid`, read from /proc the way a test can check without the code under test. */
async function descendants(pid: number): Promise<number[]> {
  const result: number[] = [];
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return result;
  }
  for (const task of tasks) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of text.split(/\s+/).filter(Boolean).map(Number)) result.push(child, ...(await descendants(child)));
  }
  return result;
}

/** True while `pid` exists and is not a zombie. */
async function running(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

test('killProcessTree kills nested children', async (t) => {
  const child = spawn('sh', ['-c', 'sleep 3001 & sleep 3002 & (sleep 3003 & wait) & wait'], { stdio: 'ignore' });
  const exitSignal = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  let before: number[] = [];
  for (let attempt = 0; attempt < 100 && before.length < 4; attempt++) {
    await sleep(20);
    before = await descendants(child.pid!);
  }
  assert.ok(before.length >= 4, `expected 4 descendants, found ${before.length}`);

  const killed = await killProcessTree(child.pid!, log);
  for (const pid of [child.pid!, ...before]) assert.ok(killed.includes(pid), `pid ${pid} not signalled`);

  const deadline = Date.now() + 5000;
  for (const pid of before) {
    while ((await running(pid)) && Date.now() < deadline) await sleep(20);
    assert.equal(await running(pid), false, `pid ${pid} still runs`);
  }
  assert.equal(await exitSignal, 'SIGKILL');
});

test('killProcessTree of a gone process', async () => {
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  await sleep(50);
  assert.deepEqual(await killProcessTree(child.pid!, log), [child.pid]);
});
