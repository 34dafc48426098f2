import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildContainerSpec, processArgs, processEnv, toOciResources, DEFAULT_MASKED_PATHS, type SpecInputs } from '../../src/container/spec.js';
import type { ContainerConfig__Output } from '../../src/cri/generated/runtime/v1/ContainerConfig.js';
import type { SandboxRecord } from '../../src/sandbox/record.js';
import type { LinuxContainerResources__Output } from '../../src/cri/generated/runtime/v1/LinuxContainerResources.js';

function containerConfig(overrides: Partial<ContainerConfig__Output> = {}): ContainerConfig__Output {
  return {
    metadata: { name: 'app', attempt: 0 },
    image: { image: 'example/app', annotations: {}, user_specified_image: '', runtime_handler: '', image_ref: '' },
    command: [],
    args: [],
    working_dir: '',
    envs: [],
    mounts: [],
    devices: [],
    labels: {},
    annotations: { note: 'x' },
    log_path: '',
    stdin: false,
    stdin_once: false,
    tty: false,
    linux: null,
    windows: null,
    CDI_devices: [],
    stop_signal: 'RUNTIME_DEFAULT',
    ...overrides,
  } as ContainerConfig__Output;
}

const sandbox = {
  id: 'sandbox1',
  hostname: 'pod-host',
  dir: '/run/berth/sandboxes/sandbox1',
  pinned: { net: '/run/ns/net', ipc: '/run/ns/ipc', uts: '/run/ns/uts' },
  shmPath: '/run/berth/sandboxes/sandbox1/shm',
  sysctls: { 'net.ipv4.ip_forward': '1' },
} as unknown as SandboxRecord;

const image = { Entrypoint: ['/entry'], Cmd: ['default-arg'], Env: ['PATH=/image/bin', 'KEEP=1', 'OVERRIDE=old'], WorkingDir: '/srv' };

function inputs(config: ContainerConfig__Output, overrides: Partial<SpecInputs> = {}): SpecInputs {
  return {
    id: 'c1',
    config,
    sandbox,
    image,
    rootfsPath: '/rootfs',
    user: { uid: 1000, gid: 1000, additionalGids: [44], home: '/home/app' },
    mounts: [],
    devices: [],
    pidNamespace: { kind: 'new' },
    cgroupsPath: '/berth/sandbox1/berth-c1',
    defaultCapabilities: ['CHOWN', 'KILL'],
    swapAccounting: true,
    pidsLimit: 0,
    ...overrides,
  };
}

test('command and args merge with the image as the kubelet expects', () => {
  assert.deepEqual(processArgs(containerConfig(), image), ['/entry', 'default-arg']);
  assert.deepEqual(processArgs(containerConfig({ args: ['x'] }), image), ['/entry', 'x']);
  assert.deepEqual(processArgs(containerConfig({ command: ['/bin/sh'] }), image), ['/bin/sh']);
  assert.deepEqual(processArgs(containerConfig({ command: ['/bin/sh'], args: ['-c', 'true'] }), image), ['/bin/sh', '-c', 'true']);
  assert.throws(() => processArgs(containerConfig(), {}), /no command to run/);
});

test('env appends and overrides by name', () => {
  const env = processEnv(containerConfig({ envs: [{ key: 'OVERRIDE', value: 'new' }, { key: 'ADDED', value: 'a=b' }] }), image, 'pod-host', '/home/app');
  assert.deepEqual(env, ['PATH=/image/bin', 'KEEP=1', 'OVERRIDE=new', 'ADDED=a=b', 'HOSTNAME=pod-host', 'HOME=/home/app']);
  assert.throws(() => processEnv(containerConfig({ envs: [{ key: 'A=B', value: '' }] }), image, 'h', '/'), /config\.envs\[0\]: invalid name/);
});

test('spec joins the pod namespaces and files', () => {
  const spec = buildContainerSpec(inputs(containerConfig()));
  assert.deepEqual(spec.linux?.namespaces, [
    { type: 'mount' },
    { type: 'network', path: '/run/ns/net' },
    { type: 'ipc', path: '/run/ns/ipc' },
    { type: 'uts', path: '/run/ns/uts' },
    { type: 'pid' },
  ]);
  assert.equal(spec.hostname, 'pod-host');
  assert.equal(spec.process?.cwd, '/srv');
  assert.deepEqual(spec.process?.user, { uid: 1000, gid: 1000, additionalGids: [44] });
  assert.deepEqual(spec.linux?.sysctl, { 'net.ipv4.ip_forward': '1' });
  const shm = spec.mounts?.find((mount) => mount.destination === '/dev/shm');
  assert.equal(shm?.source, '/run/berth/sandboxes/sandbox1/shm');
  const resolv = spec.mounts?.find((mount) => mount.destination === '/etc/resolv.conf');
  assert.equal(resolv?.source, '/run/berth/sandboxes/sandbox1/resolv.conf');
  assert.deepEqual(spec.linux?.maskedPaths, DEFAULT_MASKED_PATHS);
  assert.equal(spec.annotations?.note, 'x');
});

test('security context reaches the spec', () => {
  const config = containerConfig({
    linux: {
      resources: null,
      security_context: {
        capabilities: { add_capabilities: ['NET_ADMIN'], drop_capabilities: ['KILL'], add_ambient_capabilities: [] },
        privileged: false,
        readonly_rootfs: true,
        no_new_privs: true,
        masked_paths: ['/proc/secret'],
        readonly_paths: ['/proc/ro'],
      },
    },
  } as unknown as Partial<ContainerConfig__Output>);
  const spec = buildContainerSpec(inputs(config, { seccomp: { defaultAction: 'SCMP_ACT_ERRNO' }, pidNamespace: { kind: 'path', path: '/proc/9/ns/pid' } }));
  assert.deepEqual(spec.process?.capabilities?.bounding, ['CAP_CHOWN', 'CAP_NET_ADMIN']);
  assert.equal(spec.root?.readonly, true);
  assert.equal(spec.process?.noNewPrivileges, true);
  assert.deepEqual(spec.linux?.maskedPaths, ['/proc/secret']);
  assert.deepEqual(spec.linux?.readonlyPaths, ['/proc/ro']);
  assert.equal(spec.linux?.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
  assert.deepEqual(spec.linux?.namespaces?.at(-1), { type: 'pid', path: '/proc/9/ns/pid' });
});

test('privileged spec has all devices and no masks', () => {
  const config = containerConfig({ linux: { resources: null, security_context: { privileged: true, masked_paths: [], readonly_paths: [] } } } as unknown as Partial<ContainerConfig__Output>);
  const spec = buildContainerSpec(inputs(config, { pidNamespace: { kind: 'host' } }));
  assert.equal(spec.linux?.maskedPaths, undefined);
  assert.deepEqual(spec.linux?.resources?.devices?.[1], { allow: true, access: 'rwm' });
  assert.ok(spec.mounts?.find((mount) => mount.destination === '/sys')?.options?.includes('rw'));
  assert.ok(!spec.linux?.namespaces?.some((namespace) => namespace.type === 'pid'));
});

test('request mounts replace defaults and sort by depth', () => {
  const spec = buildContainerSpec(
    inputs(containerConfig(), {
      mounts: [
        { destination: '/data/sub', type: 'bind', source: '/h/sub', options: ['rbind'] },
        { destination: '/etc/hosts', type: 'bind', source: '/kubelet/hosts', options: ['rbind'] },
        { destination: '/data', type: 'bind', source: '/h/data', options: ['rbind'] },
      ],
    }),
  );
  const destinations = spec.mounts!.map((mount) => mount.destination);
  assert.equal(destinations.filter((destination) => destination === '/etc/hosts').length, 1);
  assert.equal(spec.mounts!.find((mount) => mount.destination === '/etc/hosts')?.source, '/kubelet/hosts');
  assert.ok(destinations.indexOf('/data') < destinations.indexOf('/data/sub'));
});

test('resources convert with swap and hugepages', () => {
  const resources = {
    cpu_period: '100000',
    cpu_quota: '50000',
    cpu_shares: '512',
    memory_limit_in_bytes: String(64 * 1024 * 1024),
    oom_score_adj: '0',
    cpuset_cpus: '0-1',
    cpuset_mems: '',
    hugepage_limits: [{ page_size: '2MB', limit: '0' }],
    unified: {},
    memory_swap_limit_in_bytes: '0',
  } as LinuxContainerResources__Output;
  assert.deepEqual(toOciResources(resources, { swapAccounting: true, pidsLimit: 100 }), {
    pids: { limit: 100 },
    cpu: { shares: 512, quota: 50000, period: 100000, cpus: '0-1' },
    memory: { limit: 67108864, swap: 67108864 },
    hugepageLimits: [{ pageSize: '2MB', limit: 0 }],
  });
  assert.deepEqual(toOciResources(resources, { swapAccounting: false, pidsLimit: 0 }).memory, { limit: 67108864 });
  assert.throws(() => toOciResources({ ...resources, cpuset_cpus: '0;1' }, { swapAccounting: true, pidsLimit: 0 }), /cpuset_cpus/);
  assert.throws(() => toOciResources({ ...resources, hugepage_limits: [{ page_size: '2M', limit: '1' }] }, { swapAccounting: true, pidsLimit: 0 }), /page_size/);
});

test('relative working dir is InvalidArgument', () => {
  assert.throws(() => buildContainerSpec(inputs(containerConfig({ working_dir: 'relative' }))), /config\.working_dir/);
});
