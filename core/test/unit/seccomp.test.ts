import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, open, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { BuiltinSeccompProvider, MAX_PROFILE_BYTES } from '../../src/seccomp/builtin.js';
import { runtimeDefaultProfile } from '../../src/seccomp/default-profile.js';

const log = pino({ level: 'silent' });
const context = { privileged: false, log };
let dir: string;
let provider: BuiltinSeccompProvider;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'berth-seccomp-'));
  provider = await BuiltinSeccompProvider.create('', log);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('RuntimeDefault blocks mount and namespace calls', async () => {
  const profile = await provider.resolve({ profileType: 'RuntimeDefault' }, context);
  assert.equal(profile?.defaultAction, 'SCMP_ACT_ERRNO');
  const allowed = new Set(profile!.syscalls!.filter((rule) => rule.action === 'SCMP_ACT_ALLOW' && !rule.args).flatMap((rule) => rule.names));
  for (const name of ['read', 'write', 'execve', 'openat']) assert.ok(allowed.has(name), name);
  for (const name of ['mount', 'umount2', 'unshare', 'setns', 'kexec_load', 'bpf', 'reboot', 'keyctl']) assert.ok(!allowed.has(name), name);
});

test('RuntimeDefault restricts clone flags', () => {
  const clone = runtimeDefaultProfile('x64').syscalls!.find((rule) => rule.names.includes('clone'));
  assert.deepEqual(clone?.args, [{ index: 0, value: 0x7e020000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]);
  assert.equal(runtimeDefaultProfile('s390x').syscalls!.find((rule) => rule.names.includes('clone'))?.args?.[0]?.index, 1);
});

test('Unconfined is no filter', async () => {
  assert.equal(await provider.resolve({ profileType: 'Unconfined' }, context), undefined);
});

test('Localhost profile is validated and loaded', async () => {
  const file = path.join(dir, 'good.json');
  await writeFile(file, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ name: 'mkdir', action: 'SCMP_ACT_ERRNO' }] }));
  const profile = await provider.resolve({ profileType: 'Localhost', localhostRef: file }, context);
  assert.deepEqual(profile?.syscalls, [{ names: ['mkdir'], action: 'SCMP_ACT_ERRNO' }]);
});

test('bad Localhost profiles are InvalidArgument', async () => {
  const bad = path.join(dir, 'bad.json');
  await writeFile(bad, JSON.stringify({ defaultAction: 'SCMP_ACT_MAYBE' }));
  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: bad }, context), /seccomp profile .*bad\.json is invalid: \/defaultAction: must be one of/);

  const broken = path.join(dir, 'broken.json');
  await writeFile(broken, '{not json');
  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: broken }, context), /is not valid JSON/);

  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: 'relative.json' }, context), /not an absolute path/);
  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: path.join(dir, 'missing.json') }, context), /cannot read seccomp profile/);
});

test('Localhost profile at the size limit loads', async () => {
  const file = path.join(dir, 'padded.json');
  const json = JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW' });
  await writeFile(file, json.padEnd(MAX_PROFILE_BYTES, ' '));
  const profile = await provider.resolve({ profileType: 'Localhost', localhostRef: file }, context);
  assert.equal(profile?.defaultAction, 'SCMP_ACT_ALLOW');
});

test('oversized Localhost profile is rejected', async () => {
  const justOver = path.join(dir, 'over.json');
  await writeFile(justOver, ' '.repeat(MAX_PROFILE_BYTES + 1));
  await assert.rejects(
    provider.resolve({ profileType: 'Localhost', localhostRef: justOver }, context),
    (err: Error) => {
      assert.equal(err.name, 'InvalidArgumentError');
      assert.equal(
        err.message,
        `security_context.seccomp.localhost_ref: seccomp profile ${justOver} is ${MAX_PROFILE_BYTES + 1} bytes, larger than the limit of ${MAX_PROFILE_BYTES} bytes`,
      );
      return true;
    },
  );

  // A sparse 2 GiB file takes no disk space but would exhaust memory if read whole.
  const huge = path.join(dir, 'huge.json');
  await writeFile(huge, '');
  await truncate(huge, 2 * 1024 ** 3);
  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: huge }, context), /is 2147483648 bytes, larger than the limit of 1048576 bytes/);
});

test('Localhost profile must be a regular file', { timeout: 10_000 }, async () => {
  const device = path.join(dir, 'zero.json');
  await symlink('/dev/zero', device);
  await assert.rejects(
    provider.resolve({ profileType: 'Localhost', localhostRef: device }, context),
    /security_context\.seccomp\.localhost_ref: seccomp profile .*zero\.json is not a regular file \(it is a character device\)/,
  );

  const directory = path.join(dir, 'directory.json');
  await mkdir(directory);
  await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: directory }, context), /is not a regular file \(it is a directory\)/);

  // A FIFO with no writer blocks a plain open forever; the provider must reject it at once.
  const fifo = path.join(dir, 'fifo.json');
  await promisify(execFile)('mkfifo', [fifo]);
  try {
    await assert.rejects(provider.resolve({ profileType: 'Localhost', localhostRef: fifo }, context), /is not a regular file \(it is a FIFO\)/);
  } finally {
    await releaseFifoReaders(fifo);
  }
});

test('seccomp.profile replaces RuntimeDefault', async () => {
  const file = path.join(dir, 'default.json');
  await writeFile(file, JSON.stringify({ defaultAction: 'SCMP_ACT_LOG' }));
  const custom = await BuiltinSeccompProvider.create(file, log);
  assert.equal((await custom.resolve({ profileType: 'RuntimeDefault' }, context))?.defaultAction, 'SCMP_ACT_LOG');
});

/** Opens and closes the write end of `fifo`, which ends any read blocked on it. */
async function releaseFifoReaders(fifo: string): Promise<void> {
  try {
    const writer = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    await writer.close();
  } catch {
    // ENXIO: no reader has the FIFO open, so nothing is blocked.
  }
}
