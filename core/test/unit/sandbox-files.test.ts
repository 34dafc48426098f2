import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { renderResolvConf } from '../../src/sandbox/files.js';

const noDns = { servers: [], searches: [], options: [] };
let dir: string;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'berth-resolv-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Returns a logger that stores every line it writes, parsed. */
function recordingLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
      callback();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

test('host resolv.conf is copied', async () => {
  const file = path.join(dir, 'resolv.conf');
  await writeFile(file, 'nameserver 192.0.2.53\n');
  const { log } = recordingLogger();
  assert.equal(await renderResolvConf(noDns, log, file), 'nameserver 192.0.2.53\n');
});

test('missing host resolv.conf gives empty file', async () => {
  const { log, lines } = recordingLogger();
  const missing = path.join(dir, 'missing.conf');
  assert.equal(await renderResolvConf(noDns, log, missing), '');

  const dangling = path.join(dir, 'dangling.conf');
  await symlink(path.join(dir, 'nowhere'), dangling);
  assert.equal(await renderResolvConf(noDns, log, dangling), '');

  await new Promise((resolve) => setImmediate(resolve));
  const warnings = lines.filter((line) => line.level === 40);
  assert.equal(warnings.length, 2);
  assert.equal(warnings[0]!.path, missing);
  assert.match(String(warnings[0]!.msg), /host resolv\.conf not found/);
});

test('host resolv.conf directory is an error', async () => {
  const directory = path.join(dir, 'resolv.d');
  await mkdir(directory);
  const { log } = recordingLogger();
  await assert.rejects(renderResolvConf(noDns, log, directory), (err: Error) => {
    assert.equal(err.name, 'InternalError');
    assert.ok(err.message.includes(directory), err.message);
    assert.match(err.message, /EISDIR/);
    return true;
  });
});

test('unreadable host resolv.conf is an error', { skip: process.getuid?.() === 0 && 'root reads files of any mode' }, async () => {
  const file = path.join(dir, 'locked.conf');
  await writeFile(file, 'nameserver 192.0.2.53\n');
  await chmod(file, 0o000);
  const { log } = recordingLogger();
  await assert.rejects(renderResolvConf(noDns, log, file), /failed to read the host's resolv\.conf .*locked\.conf: EACCES/);
});

test('DNS config ignores host resolv.conf', async () => {
  const { log } = recordingLogger();
  const dns = { servers: ['192.0.2.1'], searches: ['example.test'], options: ['ndots:2'] };
  const text = await renderResolvConf(dns, log, path.join(dir, 'resolv.d-never-read'));
  assert.equal(text, 'search example.test\nnameserver 192.0.2.1\noptions ndots:2\n');
});
