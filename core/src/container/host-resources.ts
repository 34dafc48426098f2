import { readFile, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, isErrno } from '../errors.js';
import type { OciMount } from '../runtime/oci-spec.js';
import type { Mount__Output } from '../cri/generated/runtime/v1/Mount.js';
import type { Device__Output } from '../cri/generated/runtime/v1/Device.js';
import type { DeviceEntry } from './spec.js';

export interface ResolvedMounts {
  mounts: OciMount[];
  /** Propagation the rootfs needs for the mounts to work, when any needs one. */
  rootfsPropagation?: 'rslave' | 'rshared';
}

/**
 * Checks the request's bind mounts against the host and converts them to OCI mounts. The host
 * path must exist (symlinks are followed, as the CRI specifies). HOST_TO_CONTAINER needs a host mount
 * that is shared or a slave, BIDIRECTIONAL a shared one; otherwise the propagation the kubelet
 * asked for could not happen, so the call fails with the command that fixes the host.
 */
export async function resolveMounts(mounts: Mount__Output[]): Promise<ResolvedMounts> {
  const result: OciMount[] = [];
  let rootfsPropagation: ResolvedMounts['rootfsPropagation'];
  const mountinfo = mounts.some((mount) => mount.propagation !== 'PROPAGATION_PRIVATE') ? await readFile('/proc/self/mountinfo', 'utf8') : '';

  for (const [index, mount] of mounts.entries()) {
    const field = `config.mounts[${index}]`;
    if (!path.posix.isAbsolute(mount.container_path)) {
      throw new InvalidArgumentError(`${field}.container_path: ${JSON.stringify(mount.container_path)} is not an absolute path`);
    }
    if (mount.image?.image) {
      throw new InvalidArgumentError(`${field}.image: image volume mounts are not supported by berth`);
    }
    if (mount.uidMappings.length > 0 || mount.gidMappings.length > 0) {
      throw new InvalidArgumentError(`${field}: ID-mapped mounts are not supported by berth`);
    }
    if (mount.recursive_read_only) {
      throw new InvalidArgumentError(`${field}.recursive_read_only: not supported (Status reports recursive_read_only_mounts false)`);
    }

    let source: string;
    try {
      source = await realpath(mount.host_path);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) {
        throw new InvalidArgumentError(`${field}.host_path: ${JSON.stringify(mount.host_path)} does not exist on the host`);
      }
      throw err;
    }

    const options = ['rbind', mount.readonly ? 'ro' : 'rw'];
    switch (mount.propagation) {
      case 'PROPAGATION_HOST_TO_CONTAINER':
        requirePropagation(mountinfo, source, ['shared', 'master'], field);
        options.push('rslave');
        rootfsPropagation ??= 'rslave';
        break;
      case 'PROPAGATION_BIDIRECTIONAL':
        requirePropagation(mountinfo, source, ['shared'], field);
        options.push('rshared');
        rootfsPropagation = 'rshared';
        break;
      default:
        options.push('rprivate');
    }
    result.push({ destination: path.posix.normalize(mount.container_path), type: 'bind', source, options });
  }
  return { mounts: result, rootfsPropagation };
}

/** Throws unless the host mount holding `source` has one of the propagation `kinds`. */
function requirePropagation(mountinfo: string, source: string, kinds: ('shared' | 'master')[], field: string): void {
  let best: { mountPoint: string; optional: string[] } | undefined;
  for (const line of mountinfo.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const fields = line.slice(0, separator).split(' ');
    const mountPoint = fields[4] ?? '';
    const inside = source === mountPoint || source.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`);
    if (inside && (!best || mountPoint.length >= best.mountPoint.length)) best = { mountPoint, optional: fields.slice(6) };
  }

  const ok = best?.optional.some((tag) => kinds.some((kind) => tag.startsWith(`${kind}:`)));
  if (!ok) {
    const needed = kinds.includes('master') ? 'shared or slave' : 'shared';
    throw new FailedPreconditionError(
      `${field}.propagation: the host mount ${best?.mountPoint ?? '/'} holding ${source} is not ${needed}; run "mount --make-rshared ${best?.mountPoint ?? '/'}" on the host first`,
    );
  }
}

/** Checks the request's devices and reads each host device's type and numbers. */
export async function resolveDevices(devices: Device__Output[]): Promise<DeviceEntry[]> {
  const result: DeviceEntry[] = [];
  for (const [index, device] of devices.entries()) {
    const field = `config.devices[${index}]`;
    const permissions = device.permissions === '' ? 'rwm' : device.permissions;
    if (!/^[rwm]{1,3}$/.test(permissions) || new Set(permissions).size !== permissions.length) {
      throw new InvalidArgumentError(`${field}.permissions: ${JSON.stringify(device.permissions)} is invalid (allowed: letters r, w, m, each once)`);
    }
    const containerPath = device.container_path || device.host_path;
    if (!path.posix.isAbsolute(containerPath)) {
      throw new InvalidArgumentError(`${field}.container_path: ${JSON.stringify(containerPath)} is not an absolute path`);
    }

    const entry = await deviceEntry(device.host_path, containerPath, permissions);
    if (!entry) {
      throw new InvalidArgumentError(`${field}.host_path: ${JSON.stringify(device.host_path)} is not a character or block device on the host`);
    }
    result.push(entry);
  }
  return result;
}

/** Lists every device node under the host's /dev, for privileged containers. */
export async function hostDevices(): Promise<DeviceEntry[]> {
  const result: DeviceEntry[] = [];
  const skip = new Set(['/dev/pts', '/dev/shm', '/dev/mqueue', '/dev/fd', '/dev/hugepages', '/dev/console', '/dev/ptmx']);

  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      if (skip.has(full)) continue;
      if (entry.isDirectory() && depth < 3) await walk(full, depth + 1);
      if (entry.isCharacterDevice() || entry.isBlockDevice()) {
        const device = await deviceEntry(full, full, 'rwm');
        if (device) result.push(device);
      }
    }
  };
  await walk('/dev', 0);
  return result;
}

async function deviceEntry(hostPath: string, containerPath: string, permissions: string): Promise<DeviceEntry | undefined> {
  let stats;
  try {
    stats = await stat(hostPath);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR') || isErrno(err, 'EACCES')) return undefined;
    throw err;
  }
  if (!stats.isCharacterDevice() && !stats.isBlockDevice()) return undefined;

  // Linux dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31.
  const rdev = BigInt(stats.rdev);
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return {
    containerPath,
    hostPath,
    type: stats.isCharacterDevice() ? 'c' : 'b',
    major,
    minor,
    fileMode: stats.mode & 0o777,
    uid: stats.uid,
    gid: stats.gid,
    permissions,
  };
}
