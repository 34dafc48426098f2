import { readFile } from 'node:fs/promises';

/** The cgroup hierarchies mounted on this host, read from /proc/self/mountinfo. */
export interface CgroupLayout {
  /** `unified` (cgroup v2 at /sys/fs/cgroup), `hybrid` (v1 plus a cgroup2 mount) or `legacy` (v1 only). */
  mode: 'unified' | 'hybrid' | 'legacy';
  /** Mount point of the cgroup2 hierarchy, when one is mounted. */
  unifiedMount?: string;
  /** v1 controller name (cpu, cpuacct, memory, pids, hugetlb, ...) to its mount point. */
  v1Mounts: Map<string, string>;
}

/** Super options of a v1 cgroup mount that are not controller names. */
const NON_CONTROLLER_OPTIONS = new Set(['rw', 'ro', 'noprefix', 'clone_children', 'xattr', 'cpuset_v2_mode', 'favordynmods']);

/** Parses mountinfo text; exported for tests. */
export function parseCgroupMounts(mountinfo: string): CgroupLayout {
  const v1Mounts = new Map<string, string>();
  let unifiedMount: string | undefined;

  for (const line of mountinfo.split('\n')) {
    // Fields: id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const before = line.slice(0, separator).split(' ');
    const after = line.slice(separator + 3).split(' ');
    const mountPoint = unescapeMountPath(before[4] ?? '');
    const fsType = after[0];

    if (fsType === 'cgroup2') {
      unifiedMount ??= mountPoint;
    } else if (fsType === 'cgroup') {
      for (const option of (after[2] ?? '').split(',')) {
        if (NON_CONTROLLER_OPTIONS.has(option) || (option.includes('=') && !option.startsWith('name='))) continue;
        if (!v1Mounts.has(option)) v1Mounts.set(option, mountPoint);
      }
    }
  }

  let mode: CgroupLayout['mode'] = 'legacy';
  if (unifiedMount !== undefined) mode = v1Mounts.size === 0 || unifiedMount === '/sys/fs/cgroup' ? 'unified' : 'hybrid';
  return { mode, unifiedMount, v1Mounts };
}

let cached: Promise<CgroupLayout> | undefined;

/** Reads the host's cgroup layout once per process. */
export function detectCgroupLayout(): Promise<CgroupLayout> {
  cached ??= readFile('/proc/self/mountinfo', 'utf8').then(parseCgroupMounts);
  return cached;
}

function unescapeMountPath(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}
