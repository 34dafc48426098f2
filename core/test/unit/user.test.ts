import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { resolveUser } from '../../src/container/user.js';

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
