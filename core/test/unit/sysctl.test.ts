import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeSysctlName, validateSysctls } from '../../src/sandbox/sysctl.js';
import { InvalidArgumentError } from '../../src/errors.js';

const podScope = { hostNetwork: false, hostIpc: false };

test('namespaced sysctls pass', () => {
  const result = validateSysctls(
    { 'net.ipv4.ip_local_port_range': '1024 65000', 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '20', 'kernel.sem': '250\t32000\t32\t128' },
    podScope,
  );
  assert.equal(result['net.ipv4.ip_local_port_range'], '1024 65000');
  assert.equal(result['kernel.sem'], '250\t32000\t32\t128');
});

test('slash names convert to dots', () => {
  assert.equal(normalizeSysctlName('net/ipv4/conf/eth0.100/forwarding'), 'net.ipv4.conf.eth0/100.forwarding');
  assert.equal(normalizeSysctlName('net.ipv4.ip_forward'), 'net.ipv4.ip_forward');
  assert.deepEqual(validateSysctls({ 'kernel/shm_rmid_forced': '1' }, podScope), { 'kernel.shm_rmid_forced': '1' });
});

test('smuggling attempts are rejected', () => {
  const attempts: Record<string, string>[] = [
    { 'net.ipv4.ip_forward': '1\nkernel.core_pattern=|/evil' },
    { 'net.ipv4.ip_forward': '1\rkernel.x=1' },
    { 'kernel.shm_rmid_forced': '1+kernel.core_pattern=x' },
    { 'net.ipv4.ip_forward': '1,kernel.core_pattern=x' },
    { 'net.ipv4.ip_forward': '1;reboot' },
    { 'net.ipv4.ip_forward': '1=2' },
    { 'net.ipv4.ip_forward': '' },
    { 'net.ipv4.ip_forward': 'x'.repeat(257) },
    { 'net.ipv4.ip_forward=1+kernel.x': '1' },
    { 'net.ipv4.ip_forward\n': '1' },
    { 'net/../kernel/core_pattern': '1' },
    { 'net.ipv4..ip_forward': '1' },
  ];
  for (const sysctls of attempts) {
    assert.throws(() => validateSysctls(sysctls, podScope), InvalidArgumentError, JSON.stringify(sysctls));
  }
});

test('node-wide sysctls are rejected', () => {
  for (const name of ['kernel.core_pattern', 'vm.overcommit_memory', 'kernel.hostname', 'fs.file-max', 'kernel.shmfoo']) {
    assert.throws(() => validateSysctls({ [name]: '1' }, podScope), /not namespaced/, name);
  }
});

test('host namespaces forbid their sysctls', () => {
  assert.throws(() => validateSysctls({ 'net.ipv4.ip_forward': '1' }, { hostNetwork: true, hostIpc: false }), /host network/);
  assert.throws(() => validateSysctls({ 'kernel.msgmax': '1' }, { hostNetwork: false, hostIpc: true }), /host IPC/);
  assert.deepEqual(validateSysctls({ 'kernel.msgmax': '8192' }, { hostNetwork: true, hostIpc: false }), { 'kernel.msgmax': '8192' });
});

test('error names the sysctl and the allowed set', () => {
  assert.throws(
    () => validateSysctls({ 'kernel.panic': '1' }, podScope),
    (err: Error) => err.message.includes('linux.sysctls["kernel.panic"]') && err.message.includes('allowed: kernel.shm*'),
  );
});
