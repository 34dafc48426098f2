import { lstat, mkdir, opendir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../log.js';
import { AlreadyExistsError, errorMessage, InternalError, InvalidArgumentError, isErrno, NotFoundError } from '../errors.js';
import type { LayerStore } from './layer-store.js';
import type { RootfsMount } from './store.js';
import { MNT_DETACH, mountAsync, umount2Async } from './libc.js';

/** What the store keeps about a container's rootfs, saved as `containers/<id>/rootfs.json`. */
interface RootfsRecord {
  containerId: string;
  imageId: string;
  /** Chain IDs of the image's layers, lowest first. */
  chainIds: string[];
}

/** Maximum length of an overlay option string: one page (4096 bytes on x86-64) less the NUL. */
const MOUNT_DATA_LIMIT = 4095;
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

/**
 * Container root filesystems: an overlay per container whose lowerdirs are the image's layers
 * (through their short links) and whose upper and work dirs belong to the container alone.
 * mount(2) and umount2(2) run on libuv's thread pool, not in the image workers, so that a
 * container's mount never queues behind a layer that a worker is unpacking.
 */
export class RootfsManager {
  readonly dir: string;
  private readonly records = new Map<string, RootfsRecord>();

  constructor(
    private readonly layers: LayerStore,
    private readonly log: Logger,
  ) {
    this.dir = path.join(layers.dir, 'containers');
  }

  /** Loads rootfs records and deletes directories a crash left without one. */
  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.dir)) {
      const dir = path.join(this.dir, name);
      try {
        const record = JSON.parse(await readFile(path.join(dir, 'rootfs.json'), 'utf8')) as RootfsRecord;
        const missing = record.chainIds.filter((chainId) => !this.layers.layers.has(chainId));
        if (missing.length > 0) throw new Error(`layers ${missing.join(', ')} are missing`);
        this.records.set(record.containerId, record);
        this.layers.referenceLayers(record.chainIds);
      } catch (err) {
        this.log.warn({ path: dir, err: errorMessage(err) }, 'unusable container rootfs deleted');
        await this.unmount(path.join(dir, 'merged'), this.log);
        await this.layers.discard(dir);
      }
    }
  }

  /** Container IDs whose rootfs uses `imageId`. */
  users(imageId: string): string[] {
    return [...this.records.values()].filter((record) => record.imageId === imageId).map((record) => record.containerId);
  }

  async create(containerId: string, imageId: string, chainIds: string[], log: Logger): Promise<RootfsMount> {
    checkContainerId(containerId);
    const existing = this.records.get(containerId);
    if (existing) {
      if (existing.imageId !== imageId) {
        throw new AlreadyExistsError(`container ${containerId}: a rootfs from image ${existing.imageId} exists; remove it before creating one from image ${imageId}`);
      }
      return this.mount(containerId, log);
    }

    const record: RootfsRecord = { containerId, imageId, chainIds };
    const work = await this.layers.tempDir('rootfs');
    const dir = path.join(this.dir, containerId);
    this.layers.referenceLayers(chainIds);
    try {
      for (const sub of ['upper', 'work', 'merged', 'empty']) await mkdir(path.join(work, sub), { mode: 0o755 });
      await writeFile(path.join(work, 'rootfs.json'), JSON.stringify(record));
      await rename(work, dir);
      this.records.set(containerId, record);
    } catch (err) {
      this.layers.releaseLayers(chainIds);
      await this.layers.discard(work).catch(() => undefined);
      throw err;
    }

    try {
      return await this.mount(containerId, log);
    } catch (err) {
      await this.remove(containerId, log).catch((cleanupErr: unknown) => log.error({ err: cleanupErr, container_id: containerId }, 'cannot remove rootfs after a failed mount'));
      throw err;
    }
  }

  /** Mounts the container's overlay unless it is mounted already. */
  async mount(containerId: string, log: Logger): Promise<RootfsMount> {
    const record = this.records.get(containerId);
    if (!record) throw new NotFoundError(`container ${containerId}: no rootfs exists`);
    const paths = this.paths(containerId);
    if (await isMountPoint(paths.path)) return paths;

    const links = record.chainIds.map((chainId) => this.layers.layers.get(chainId)?.link).reverse();
    if (links.some((link) => link === undefined)) throw new InternalError(`container ${containerId}: a layer of image ${record.imageId} is missing from the store`);
    const lowers = links.length > 0 ? links.map((link) => path.join(this.layers.linksDir, link!)) : [path.join(this.dir, containerId, 'empty')];
    const options = `upperdir=${paths.upperDir},workdir=${paths.workDir}`;
    const data = `lowerdir=${lowers.join(':')},${options}`;

    try {
      if (data.length <= MOUNT_DATA_LIMIT) {
        await mountAsync('overlay', paths.path, 'overlay', 0, data);
      } else {
        // Too long for one page with absolute paths: mount(8) runs in the store directory so the
        // short links can be given relative to it.
        const relative = `lowerdir=${lowers.map((lower) => path.relative(this.layers.dir, lower)).join(':')},${options}`;
        if (relative.length > MOUNT_DATA_LIMIT) {
          throw new InvalidArgumentError(`container ${containerId}: image ${record.imageId} has ${links.length} layers, more than one overlay mount can stack`);
        }
        await execa('mount', ['-t', 'overlay', 'overlay', '-o', relative, paths.path], { cwd: this.layers.dir });
      }
    } catch (err) {
      if (err instanceof InvalidArgumentError) throw err;
      throw new InternalError(`container ${containerId}: cannot mount the overlay rootfs at ${paths.path}: ${errorMessage(err)}`, { cause: err });
    }
    log.debug({ container_id: containerId, path: paths.path, layers: links.length }, 'rootfs mounted');
    return paths;
  }

  async remove(containerId: string, log: Logger): Promise<void> {
    const record = this.records.get(containerId);
    const dir = path.join(this.dir, containerId);
    if (!record) {
      checkContainerId(containerId);
      return;
    }
    await this.unmount(path.join(dir, 'merged'), log);
    await this.layers.discard(dir);
    this.records.delete(containerId);
    this.layers.releaseLayers(record.chainIds);
    log.debug({ container_id: containerId }, 'rootfs removed');
  }

  /** Bytes of file content and inodes in the container's upper directory. */
  async usage(containerId: string): Promise<{ usedBytes: number; inodesUsed: number }> {
    if (!this.records.has(containerId)) throw new NotFoundError(`container ${containerId}: no rootfs exists`);
    let usedBytes = 0;
    let inodesUsed = 0;
    const walk = async (dir: string): Promise<void> => {
      const handle = await opendir(dir);
      for await (const entry of handle) {
        const full = path.join(dir, entry.name);
        const stats = await lstat(full);
        inodesUsed++;
        if (stats.isFile()) usedBytes += stats.size;
        if (stats.isDirectory()) await walk(full);
      }
    };
    await walk(this.paths(containerId).upperDir);
    return { usedBytes, inodesUsed };
  }

  private paths(containerId: string): RootfsMount {
    const dir = path.join(this.dir, containerId);
    return { containerId, path: path.join(dir, 'merged'), upperDir: path.join(dir, 'upper'), workDir: path.join(dir, 'work') };
  }

  private async unmount(target: string, log: Logger): Promise<void> {
    if (!(await isMountPoint(target))) return;
    try {
      await umount2Async(target, 0);
    } catch (err) {
      if (!isErrno(err, 'EBUSY')) throw err;
      log.warn({ path: target }, 'rootfs busy; detaching it lazily');
      await umount2Async(target, MNT_DETACH);
    }
  }
}

function checkContainerId(containerId: string): void {
  if (!CONTAINER_ID.test(containerId)) {
    throw new InvalidArgumentError(`container id "${containerId}" is invalid: use 1 to 128 letters, digits, "_", "." or "-", starting with a letter or digit`);
  }
}

/** Returns true when `target` is a mount point, per /proc/self/mountinfo. */
export async function isMountPoint(target: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const mountPoint = line.split(' ')[4];
    if (mountPoint !== undefined && unescapeMountPath(mountPoint) === target) return true;
  }
  return false;
}

/** Finds the mount point of the filesystem that contains `target` (the longest mount point prefix). */
export async function mountPointOf(target: string): Promise<string> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  let best = '/';
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const mountPoint = unescapeMountPath(field);
    const inside = target === mountPoint || target.startsWith(mountPoint.endsWith('/') ? mountPoint : `${mountPoint}/`);
    if (inside && mountPoint.length > best.length) best = mountPoint;
  }
  return best;
}

function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
