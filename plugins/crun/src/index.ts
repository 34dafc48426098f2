import { readFile } from 'node:fs/promises';
import {
  FailedPreconditionError,
  createOciCliDriver,
  detectCgroupLayout,
  type CgroupLayout,
  type OciCliOptions,
  type RuntimeDriverFactory,
} from '@berth/core';

/** The crun runtime driver: the shared OCI-CLI driver with crun as the binary and a host check. */
const factory: RuntimeDriverFactory = {
  create: (options, context) =>
    createOciCliDriver({
      runtimeName: 'crun',
      options: options as OciCliOptions,
      context,
      preflight: async () => checkHugetlbLayout(await detectCgroupLayout(), await readFile('/proc/cgroups', 'utf8')),
    }),
};

export default factory;

/**
 * Rejects the hybrid cgroup layout that crun 1.8 cannot use: v1 controllers plus a cgroup2
 * mount where hugetlb is enabled in the kernel but mounted on no v1 hierarchy, so it sits on
 * the cgroup2 side only. crun then fails every container, so start-up stops with the fix.
 */
export function checkHugetlbLayout(layout: CgroupLayout, procCgroups: string): void {
  if (layout.mode !== 'hybrid' || layout.v1Mounts.has('hugetlb')) return;

  const hugetlb = procCgroups.split('\n').find((line) => line.startsWith('hugetlb\t') || line.startsWith('hugetlb '));
  const enabled = hugetlb?.trim().split(/\s+/)[3] === '1';
  if (!enabled) return;

  throw new FailedPreconditionError(
    `crun cannot run containers on this host: cgroups are hybrid (v1 controllers plus cgroup2 at ${layout.unifiedMount}) ` +
      'and the hugetlb controller is mounted on no v1 hierarchy, which crun 1.8 refuses. ' +
      'Run scripts/prepare-host.sh as root, or mount it yourself: ' +
      'mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb',
  );
}
