import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCgroupMounts } from '../../src/cgroups/layout.js';
import { parseFlatKeyed, parseNetDev } from '../../src/cgroups/stats.js';

const hybrid = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate',
].join('\n');

test('hybrid layout maps controllers', () => {
  const layout = parseCgroupMounts(hybrid);
  assert.equal(layout.mode, 'hybrid');
  assert.equal(layout.unifiedMount, '/sys/fs/cgroup/unified');
  assert.equal(layout.v1Mounts.get('memory'), '/sys/fs/cgroup/memory');
  assert.equal(layout.v1Mounts.get('cpu'), '/sys/fs/cgroup/cpu');
  assert.equal(layout.v1Mounts.get('cpuacct'), '/sys/fs/cgroup/cpu,cpuacct');
  assert.equal(layout.v1Mounts.get('name=systemd'), '/sys/fs/cgroup/systemd');
  assert.ok(!layout.v1Mounts.has('xattr'));
});

test('unified layout', () => {
  const layout = parseCgroupMounts('30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot');
  assert.equal(layout.mode, 'unified');
  assert.equal(layout.v1Mounts.size, 0);
});

test('flat keyed and net/dev parse', () => {
  assert.equal(parseFlatKeyed('usage_usec 1500\nuser_usec 1000\n').get('usage_usec'), 1500n);
  const netDev = [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0',
    '  eth0:    2000      20    3    0    0     0          0         0     4000      40    5    0    0     0       0          0',
  ].join('\n');
  assert.deepEqual(parseNetDev(netDev), [{ name: 'eth0', rxBytes: 2000n, rxErrors: 3n, txBytes: 4000n, txErrors: 5n }]);
});
