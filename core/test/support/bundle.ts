import { copyFile, mkdir, mkdtemp, readdir, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { OciSpec } from '../../src/runtime/oci-spec.js';
import { cgroupDirs } from '../../src/cgroups/paths.js';
import { detectCgroupLayout } from '../../src/cgroups/layout.js';

const execFileAsync = promisify(execFile);

/** busybox from Debian's busybox-static package: one static binary for every test rootfs. */
export const BUSYBOX = '/bin/busybox';

/** Creates a rootfs holding busybox and a link for each of its applets in /bin. */
export async function makeBusyboxRootfs(rootfs: string): Promise<void> {
  await mkdir(path.join(rootfs, 'bin'), { recursive: true });
  for (const dir of ['proc', 'sys', 'dev', 'etc', 'tmp', 'root']) await mkdir(path.join(rootfs, dir), { recursive: true });
  await copyFile(BUSYBOX, path.join(rootfs, 'bin/busybox'));

  const { stdout } = await execFileAsync(BUSYBOX, ['--list']);
  for (const applet of stdout.split('\n').filter((name) => name && name !== 'busybox')) {
    await symlink('busybox', path.join(rootfs, 'bin', applet));
  }
  await writeFile(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n');
  await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\nuser:x:1000:\nextra:x:3000:user\n');
}

/** A minimal OCI spec that runs `args` as root in new namespaces with default capabilities. */
export function busyboxSpec(args: string[], cgroupsPath: string): OciSpec {
  const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID', 'CAP_NET_BIND_SERVICE'];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', 'HOME=/root'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: false },
    hostname: 'bundle',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      cgroupsPath,
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/** A temp directory with a shared busybox rootfs and a unique cgroup parent for one test file. */
export class BundleWorkspace {
  private constructor(
    readonly dir: string,
    readonly rootfs: string,
    readonly cgroupParent: string,
  ) {}

  static async create(): Promise<BundleWorkspace> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-bundles-'));
    const rootfs = path.join(dir, 'rootfs');
    await makeBusyboxRootfs(rootfs);
    return new BundleWorkspace(dir, rootfs, `/berth-test-${randomBytes(4).toString('hex')}`);
  }

  /** Writes a bundle whose rootfs is a bind of the shared one, so bundles cost no copy. */
  async bundle(id: string, args: string[], edit?: (spec: OciSpec) => void): Promise<string> {
    const bundleDir = path.join(this.dir, 'bundles', id);
    await mkdir(bundleDir, { recursive: true });
    const spec = busyboxSpec(args, `${this.cgroupParent}/${id}`);
    spec.root = { path: this.rootfs, readonly: false };
    edit?.(spec);
    await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(spec));
    return bundleDir;
  }

  /** Removes the cgroup parent from every hierarchy (children first) and the temp directory. */
  async cleanup(): Promise<void> {
    const layout = await detectCgroupLayout();
    for (const dir of cgroupDirs(layout, this.cgroupParent)) {
      await removeTree(dir);
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Lists cgroup directories left under the parent in any hierarchy. */
  async leftoverCgroups(): Promise<string[]> {
    const layout = await detectCgroupLayout();
    const left: string[] = [];
    for (const dir of cgroupDirs(layout, this.cgroupParent)) {
      try {
        for (const entry of await readdir(dir, { withFileTypes: true })) {
          if (entry.isDirectory()) left.push(path.join(dir, entry.name));
        }
      } catch {
        // The hierarchy has no such directory.
      }
    }
    return left;
  }
}

async function removeTree(dir: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  await rmdir(dir).catch(() => undefined);
}
