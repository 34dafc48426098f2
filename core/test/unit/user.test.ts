import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, open, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import os from 'node:os';
import path from 'node:path';
import { MAX_ACCOUNT_FILE_BYTES, resolveUser } from '../../src/container/user.js';

let rootfs: string;
let outside: string;

before(async () => {
  rootfs = await mkdtemp(path.join(os.tmpdir(), 'berth-user-'));
  outside = await mkdtemp(path.join(os.tmpdir(), 'berth-user-outside-'));
  await mkdir(path.join(rootfs, 'etc'));
  await writeFile(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n');
  await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1000:\nvideo:x:44:app\naudio:x:29:app,other\n');
});

after(async () => {
  await rm(rootfs, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

const base = { imageUser: '', supplementalGroups: [] };

test('empty image user is root', async () => {
  assert.deepEqual(await resolveUser(rootfs, base), { uid: 0, gid: 0, additionalGids: [], home: '/root' });
});

test('image user by name gets groups from /etc/group', async () => {
  const user = await resolveUser(rootfs, { ...base, imageUser: 'app' });
  assert.deepEqual(user, { uid: 1000, gid: 1000, additionalGids: [44, 29], home: '/home/app' });
});

test('image user uid:gid', async () => {
  assert.deepEqual(await resolveUser(rootfs, { ...base, imageUser: '1000:44' }), { uid: 1000, gid: 44, additionalGids: [29], home: '/home/app' });
  assert.deepEqual(await resolveUser(rootfs, { ...base, imageUser: '4242' }), { uid: 4242, gid: 0, additionalGids: [], home: '/' });
});

test('run_as_user, username and group override the image', async () => {
  assert.equal((await resolveUser(rootfs, { ...base, imageUser: 'app', runAsUser: 0 })).uid, 0);
  const byName = await resolveUser(rootfs, { ...base, runAsUsername: 'app', runAsGroup: 5, supplementalGroups: [7, 44] });
  assert.deepEqual(byName, { uid: 1000, gid: 5, additionalGids: [44, 29, 7], home: '/home/app' });
});

test('unknown names are InvalidArgument', async () => {
  await assert.rejects(resolveUser(rootfs, { ...base, runAsUsername: 'ghost' }), /run_as_username: user "ghost" is not in the image's \/etc\/passwd/);
  await assert.rejects(resolveUser(rootfs, { ...base, imageUser: 'ghost' }), /image config User: user "ghost"/);
  await assert.rejects(resolveUser(rootfs, { ...base, imageUser: 'app:nogroup' }), /group "nogroup"/);
  await assert.rejects(resolveUser(rootfs, { ...base, runAsUser: -1 }), /run_as_user: -1 is not a valid id/);
});

test('passwd symlink stays inside the rootfs', async () => {
  const other = await mkdtemp(path.join(os.tmpdir(), 'berth-user-link-'));
  await mkdir(path.join(other, 'etc'));
  await writeFile(path.join(outside, 'passwd'), 'evil:x:0:0::/:/bin/sh\n');
  await symlink(path.join(outside, 'passwd'), path.join(other, 'etc/passwd'));
  await assert.rejects(resolveUser(other, { ...base, imageUser: 'evil' }), /user "evil" is not in the image's/);
  await rm(other, { recursive: true, force: true });
});

test('oversized /etc/passwd is rejected', async () => {
  const image = await mkdtemp(path.join(os.tmpdir(), 'berth-user-huge-'));
  try {
    await mkdir(path.join(image, 'etc'));
    await writeFile(path.join(image, 'etc/passwd'), '');
    await truncate(path.join(image, 'etc/passwd'), 2 * 1024 ** 3);
    await assert.rejects(
      resolveUser(image, base),
      new RegExp(`image file /etc/passwd: .*/etc/passwd is 2147483648 bytes, larger than the limit of ${MAX_ACCOUNT_FILE_BYTES} bytes`),
    );
  } finally {
    await rm(image, { recursive: true, force: true });
  }
});

test('/etc/group at the size limit is read', async () => {
  const image = await mkdtemp(path.join(os.tmpdir(), 'berth-user-limit-'));
  try {
    await mkdir(path.join(image, 'etc'));
    await writeFile(path.join(image, 'etc/passwd'), 'app:x:1000:1000:app:/home/app:/bin/sh\n');
    await writeFile(path.join(image, 'etc/group'), 'video:x:44:app\n'.padEnd(MAX_ACCOUNT_FILE_BYTES, '#'));
    assert.deepEqual((await resolveUser(image, { ...base, imageUser: 'app' })).additionalGids, [44]);

    await writeFile(path.join(image, 'etc/group'), 'video:x:44:app\n'.padEnd(MAX_ACCOUNT_FILE_BYTES + 1, '#'));
    await assert.rejects(resolveUser(image, { ...base, imageUser: 'app' }), /image file \/etc\/group: .* larger than the limit/);
  } finally {
    await rm(image, { recursive: true, force: true });
  }
});

test('/etc/passwd must be a regular file', { timeout: 10_000 }, async () => {
  const image = await mkdtemp(path.join(os.tmpdir(), 'berth-user-fifo-'));
  const fifo = path.join(image, 'etc/passwd');
  try {
    await mkdir(path.join(image, 'etc'));
    await promisify(execFile)('mkfifo', [fifo]);
    await assert.rejects(resolveUser(image, base), /image file \/etc\/passwd: .* is not a regular file \(it is a FIFO\)/);

    await rm(fifo);
    await mkdir(fifo);
    await assert.rejects(resolveUser(image, base), /image file \/etc\/passwd: .* is not a regular file \(it is a directory\)/);
  } finally {
    await releaseFifoReaders(fifo);
    await rm(image, { recursive: true, force: true });
  }
});

test('/etc/group symlink to a device is rejected', { timeout: 10_000, skip: process.getuid?.() !== 0 && 'mknod needs root' }, async () => {
  const image = await mkdtemp(path.join(os.tmpdir(), 'berth-user-zero-'));
  try {
    await mkdir(path.join(image, 'etc'));
    await mkdir(path.join(image, 'dev'));
    // The link target resolves inside the rootfs, so the image carries its own /dev/zero node.
    await promisify(execFile)('mknod', [path.join(image, 'dev/zero'), 'c', '1', '5']);
    await symlink('/dev/zero', path.join(image, 'etc/group'));
    await assert.rejects(resolveUser(image, base), /image file \/etc\/group: .*\/dev\/zero is not a regular file \(it is a character device\)/);
  } finally {
    await rm(image, { recursive: true, force: true });
  }
});

/** Opens and closes the write end of `fifo`, which ends any read blocked on it. */
async function releaseFifoReaders(fifo: string): Promise<void> {
  try {
    const writer = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    await writer.close();
  } catch {
    // ENXIO or ENOENT: no reader has the FIFO open, so nothing is blocked.
  }
}
