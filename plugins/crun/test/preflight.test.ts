import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCgroupMounts } from '@berth/core';
import { checkHugetlbLayout } from '../src/index.js';

const v1 = [
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
];
const procCgroups = '#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t4\t1\t1\nhugetlb\t0\t1\t1\n';

test('unprepared hybrid layout fails with the fix', () => {
  assert.throws(
    () => checkHugetlbLayout(parseCgroupMounts(v1.join('\n')), procCgroups),
    /hugetlb controller is mounted on no v1 hierarchy.*scripts\/prepare-host\.sh.*mount -t cgroup -o hugetlb cgroup \/sys\/fs\/cgroup\/hugetlb/,
  );
});

test('prepared hybrid layout passes', () => {
  const prepared = [...v1, '45 31 0:40 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb'].join('\n');
  assert.doesNotThrow(() => checkHugetlbLayout(parseCgroupMounts(prepared), procCgroups));
});

test('disabled hugetlb or pure v2 passes', () => {
  assert.doesNotThrow(() => checkHugetlbLayout(parseCgroupMounts(v1.join('\n')), procCgroups.replace('hugetlb\t0\t1\t1', 'hugetlb\t0\t1\t0')));
  assert.doesNotThrow(() => checkHugetlbLayout(parseCgroupMounts('30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw'), procCgroups));
});
