import { lstat, readlink } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError, isErrno } from '../errors.js';
import { FileLimitError, readRegularFile } from '../util/fs.js';

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Groups of the image's /etc/group that list the user, then the request's supplemental groups. */
  additionalGids: number[];
  /** Home directory from the image's /etc/passwd, `/` when unknown. */
  home: string;
}

export interface UserRequest {
  /** The image config's `User`: `name`, `uid`, `name:group` or `uid:gid`; empty means root. */
  imageUser: string;
  runAsUser?: number;
  runAsUsername?: string;
  runAsGroup?: number;
  supplementalGroups: number[];
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const MAX_ID = 2 ** 32 - 2;

/**
 * Largest /etc/passwd or /etc/group read from an image. At an estimated 50 bytes a line this is
 * some 80,000 accounts, far more than real images list, and small enough to hold in memory.
 */
export const MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024;

/**
 * Resolves the user a container runs as, the way the kubelet expects: `run_as_user` wins, then
 * `run_as_username`, then the image's `User`; `run_as_group` replaces the primary group. Names
 * are looked up in the rootfs's /etc/passwd and /etc/group. Throws InvalidArgumentError for a
 * name the image does not define or an id out of range.
 */
export async function resolveUser(rootfs: string, request: UserRequest): Promise<ResolvedUser> {
  const passwd = parsePasswd(await readRootfsFile(rootfs, '/etc/passwd'));
  const groups = parseGroup(await readRootfsFile(rootfs, '/etc/group'));

  let entry: PasswdEntry | undefined;
  let uid: number;
  let gid: number | undefined;

  if (request.runAsUser !== undefined) {
    uid = checkId(request.runAsUser, 'security_context.run_as_user');
    entry = passwd.find((candidate) => candidate.uid === uid);
  } else if (request.runAsUsername) {
    entry = passwd.find((candidate) => candidate.name === request.runAsUsername);
    if (!entry) {
      if (!/^\d+$/.test(request.runAsUsername)) {
        throw new InvalidArgumentError(
          `security_context.run_as_username: user ${JSON.stringify(request.runAsUsername)} is not in the image's /etc/passwd`,
        );
      }
      uid = checkId(Number(request.runAsUsername), 'security_context.run_as_username');
    } else {
      uid = entry.uid;
    }
  } else {
    const [userPart = '', groupPart] = request.imageUser.split(':');
    if (userPart === '') {
      uid = 0;
    } else if (/^\d+$/.test(userPart)) {
      uid = checkId(Number(userPart), 'image config User');
    } else {
      entry = passwd.find((candidate) => candidate.name === userPart);
      if (!entry) throw new InvalidArgumentError(`image config User: user ${JSON.stringify(userPart)} is not in the image's /etc/passwd`);
      uid = entry.uid;
    }
    entry ??= passwd.find((candidate) => candidate.uid === uid);

    if (groupPart !== undefined && groupPart !== '') {
      if (/^\d+$/.test(groupPart)) {
        gid = checkId(Number(groupPart), 'image config User group');
      } else {
        const group = groups.find((candidate) => candidate.name === groupPart);
        if (!group) throw new InvalidArgumentError(`image config User: group ${JSON.stringify(groupPart)} is not in the image's /etc/group`);
        gid = group.gid;
      }
    }
  }

  gid ??= entry?.gid ?? 0;
  if (request.runAsGroup !== undefined) gid = checkId(request.runAsGroup, 'security_context.run_as_group');

  const additionalGids: number[] = [];
  if (entry) {
    for (const group of groups) {
      if (group.members.includes(entry.name) && group.gid !== gid && !additionalGids.includes(group.gid)) additionalGids.push(group.gid);
    }
  }
  for (const [index, group] of request.supplementalGroups.entries()) {
    const checked = checkId(group, `security_context.supplemental_groups[${index}]`);
    if (!additionalGids.includes(checked)) additionalGids.push(checked);
  }

  return { uid, gid, additionalGids, home: entry?.home || '/' };
}

function checkId(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_ID) {
    throw new InvalidArgumentError(`${field}: ${value} is not a valid id (0 to ${MAX_ID})`);
  }
  return value;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 7 || line.startsWith('#')) continue;
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    entries.push({ name: fields[0]!, uid, gid, home: fields[5]! });
  }
  return entries;
}

export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 4 || line.startsWith('#')) continue;
    const gid = Number(fields[2]);
    if (!Number.isInteger(gid)) continue;
    entries.push({ name: fields[0]!, gid, members: fields[3]!.split(',').filter(Boolean) });
  }
  return entries;
}

/**
 * Reads a file of the rootfs, following symlinks inside the rootfs only: an absolute link target
 * is taken relative to the rootfs, so an image cannot make the daemon read a host file.
 * Returns an empty string when the file does not exist. Raises InvalidArgumentError when it is
 * not a regular file or is larger than MAX_ACCOUNT_FILE_BYTES.
 * NOTE: only the last path component is checked; a symlinked /etc directory is followed on the host.
 */
async function readRootfsFile(rootfs: string, file: string): Promise<string> {
  let current = file;
  for (let hops = 0; hops < 8; hops++) {
    const hostPath = path.join(rootfs, path.posix.normalize(`/${current}`));
    try {
      const stats = await lstat(hostPath);
      if (!stats.isSymbolicLink()) return await readAccountFile(hostPath, file);
      const target = await readlink(hostPath);
      current = path.posix.isAbsolute(target) ? target : path.posix.join(path.posix.dirname(current), target);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return '';
      throw err;
    }
  }
  return '';
}

/**
 * Reads the resolved host path of an image's account file. O_NOFOLLOW makes the open fail
 * rather than follow a symlink that replaced the file after lstat.
 */
async function readAccountFile(hostPath: string, imageFile: string): Promise<string> {
  try {
    return await readRegularFile(hostPath, { maxBytes: MAX_ACCOUNT_FILE_BYTES, noFollow: true });
  } catch (err) {
    if (err instanceof FileLimitError) throw new InvalidArgumentError(`image file ${imageFile}: ${err.message}`);
    throw err;
  }
}
