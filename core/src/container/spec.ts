import path from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import type { ImageConfig } from '../image/store.js';
import type { OciLinuxResources, OciMount, OciNamespace, OciSeccomp, OciSpec } from '../runtime/oci-spec.js';
import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';
import type { SandboxRecord } from '../sandbox/record.js';
import { resolveCapabilities } from './capabilities.js';
import type { ResolvedUser } from './user.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Paths hidden from unprivileged containers when the request lists none (the kubelet's defaults). */
export const DEFAULT_MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/interrupts', '/proc/kcore', '/proc/keys', '/proc/latency_stats',
  '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];

/** Paths mounted read-only in unprivileged containers when the request lists none. */
export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Where the container's PID namespace comes from. */
export type PidNamespace = { kind: 'new' } | { kind: 'host' } | { kind: 'path'; path: string };

export interface DeviceEntry {
  containerPath: string;
  hostPath: string;
  type: 'c' | 'b';
  major: number;
  minor: number;
  fileMode: number;
  uid: number;
  gid: number;
  /** cgroup access letters, a subset of `rwm`. */
  permissions: string;
}

/** Everything the spec needs, resolved beforehand by the container service (which does the I/O). */
export interface SpecInputs {
  id: string;
  config: ContainerConfig__Output;
  sandbox: SandboxRecord;
  image: ImageConfig['config'];
  rootfsPath: string;
  user: ResolvedUser;
  /** Bind mounts from the request, already checked against the host. */
  mounts: OciMount[];
  /** `rslave` or `rshared` when a mount needs that propagation of the rootfs. */
  rootfsPropagation?: string;
  devices: DeviceEntry[];
  seccomp?: OciSeccomp;
  pidNamespace: PidNamespace;
  cgroupsPath: string;
  defaultCapabilities: string[];
  /** oom_score_adj after clamping, or undefined to inherit. */
  oomScoreAdj?: number;
  /** False when the host has no memory+swap accounting (memory.memsw.* in cgroup v1). */
  swapAccounting: boolean;
  /** 0 means no pids limit. */
  pidsLimit: number;
}

/** Builds the OCI runtime config for a container from the image config and the CRI request. */
export function buildContainerSpec(inputs: SpecInputs): OciSpec {
  const { config, sandbox } = inputs;
  const security = config.linux?.security_context ?? null;
  const privileged = security?.privileged ?? false;

  const capabilities = resolveCapabilities(
    inputs.defaultCapabilities,
    security?.capabilities?.add_capabilities ?? [],
    security?.capabilities?.drop_capabilities ?? [],
    privileged,
  );

  const spec: OciSpec = {
    ociVersion: '1.0.2',
    process: {
      terminal: config.tty,
      user: { uid: inputs.user.uid, gid: inputs.user.gid, additionalGids: inputs.user.additionalGids },
      args: processArgs(config, inputs.image),
      env: processEnv(config, inputs.image, sandbox.hostname, inputs.user.home),
      cwd: workingDir(config, inputs.image),
      capabilities: {
        bounding: capabilities,
        effective: capabilities,
        permitted: capabilities,
      },
      noNewPrivileges: security?.no_new_privs ?? false,
    },
    root: { path: inputs.rootfsPath, readonly: security?.readonly_rootfs ?? false },
    mounts: containerMounts(inputs, privileged),
    annotations: {
      ...config.annotations,
      'io.kubernetes.cri.container-type': 'container',
      'io.kubernetes.cri.sandbox-id': sandbox.id,
      'io.kubernetes.cri.container-name': config.metadata?.name ?? '',
    },
    linux: {
      namespaces: namespaces(sandbox, inputs.pidNamespace),
      cgroupsPath: inputs.cgroupsPath,
      resources: {
        ...toOciResources(config.linux?.resources ?? null, inputs),
        devices: [
          { allow: false, access: 'rwm' },
          ...(privileged ? [{ allow: true, access: 'rwm' }] : []),
          ...inputs.devices.map((device) => ({
            allow: true,
            type: device.type,
            major: device.major,
            minor: device.minor,
            access: device.permissions,
          })),
        ],
      },
      sysctl: { ...sandbox.sysctls },
      devices: inputs.devices.map((device) => ({
        path: device.containerPath,
        type: device.type,
        major: device.major,
        minor: device.minor,
        fileMode: device.fileMode,
        uid: device.uid,
        gid: device.gid,
      })),
    },
  };

  if (inputs.oomScoreAdj !== undefined) spec.process!.oomScoreAdj = inputs.oomScoreAdj;
  if (sandbox.pinned.uts) spec.hostname = sandbox.hostname;
  if (inputs.seccomp) spec.linux!.seccomp = inputs.seccomp;
  if (inputs.rootfsPropagation) spec.linux!.rootfsPropagation = inputs.rootfsPropagation;
  if (!privileged) {
    spec.linux!.maskedPaths = security?.masked_paths.length ? [...security.masked_paths] : DEFAULT_MASKED_PATHS;
    spec.linux!.readonlyPaths = security?.readonly_paths.length ? [...security.readonly_paths] : DEFAULT_READONLY_PATHS;
  }
  return spec;
}

/**
 * Returns the process's argv as the kubelet expects: `command` replaces the image's Entrypoint,
 * `args` replaces its Cmd, and a command without args drops the image's Cmd.
 */
export function processArgs(config: ContainerConfig__Output, image: ImageConfig['config']): string[] {
  const entrypoint = config.command.length > 0 ? config.command : image?.Entrypoint ?? [];
  let cmd: string[] = image?.Cmd ?? [];
  if (config.command.length > 0) cmd = [];
  if (config.args.length > 0) cmd = config.args;
  const args = [...entrypoint, ...cmd];
  if (args.length === 0) {
    throw new InvalidArgumentError(
      'config.command: no command to run: the request gives no command or args and the image has no Entrypoint or Cmd',
    );
  }
  return args;
}

/** Returns the image's Env with the request's envs applied: a known name is replaced in place, a new one appended. */
export function processEnv(config: ContainerConfig__Output, image: ImageConfig['config'], hostname: string, home: string): string[] {
  const env = new Map<string, string>();
  for (const entry of image?.Env ?? []) {
    const separator = entry.indexOf('=');
    if (separator > 0) env.set(entry.slice(0, separator), entry.slice(separator + 1));
  }

  for (const [index, pair] of config.envs.entries()) {
    if (pair.key === '' || pair.key.includes('=') || pair.key.includes('\0') || pair.value.includes('\0')) {
      throw new InvalidArgumentError(`config.envs[${index}]: invalid name ${JSON.stringify(pair.key)}; a name must be non-empty without "=" or NUL`);
    }
    env.set(pair.key, pair.value);
  }

  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  if (!env.has('HOSTNAME') && hostname) env.set('HOSTNAME', hostname);
  if (!env.has('HOME')) env.set('HOME', home);
  return [...env].map(([key, value]) => `${key}=${value}`);
}

function workingDir(config: ContainerConfig__Output, image: ImageConfig['config']): string {
  const cwd = config.working_dir || image?.WorkingDir || '/';
  if (!path.posix.isAbsolute(cwd)) {
    throw new InvalidArgumentError(`config.working_dir: ${JSON.stringify(cwd)} is not an absolute path`);
  }
  return cwd;
}

/** Converts CRI Linux resources to the OCI section; zero values mean "not set". */
export function toOciResources(
  resources: LinuxContainerResources__Output | null,
  host: { swapAccounting: boolean; pidsLimit: number },
): OciLinuxResources {
  const result: OciLinuxResources = {};
  if (host.pidsLimit > 0) result.pids = { limit: host.pidsLimit };
  if (!resources) return result;

  const number = (value: string, field: string): number => {
    const parsed = Number(value || '0');
    if (!Number.isSafeInteger(parsed)) throw new InvalidArgumentError(`linux.resources.${field}: ${value} is not an integer`);
    return parsed;
  };

  const shares = number(resources.cpu_shares, 'cpu_shares');
  const quota = number(resources.cpu_quota, 'cpu_quota');
  const period = number(resources.cpu_period, 'cpu_period');
  if (shares < 0 || period < 0) throw new InvalidArgumentError('linux.resources: cpu_shares and cpu_period must not be negative');
  const cpu: NonNullable<OciLinuxResources['cpu']> = {};
  if (shares > 0) cpu.shares = shares;
  if (quota !== 0) cpu.quota = quota;
  if (period > 0) cpu.period = period;
  if (resources.cpuset_cpus) cpu.cpus = checkCpuset(resources.cpuset_cpus, 'cpuset_cpus');
  if (resources.cpuset_mems) cpu.mems = checkCpuset(resources.cpuset_mems, 'cpuset_mems');
  if (Object.keys(cpu).length > 0) result.cpu = cpu;

  const limit = number(resources.memory_limit_in_bytes, 'memory_limit_in_bytes');
  const swap = number(resources.memory_swap_limit_in_bytes, 'memory_swap_limit_in_bytes');
  if (limit < 0) throw new InvalidArgumentError(`linux.resources.memory_limit_in_bytes: ${limit} must not be negative`);
  if (limit > 0) {
    result.memory = { limit };
    // Without memory+swap accounting the runtime cannot set a swap limit; leaving it out keeps
    // the memory limit working.
    if (host.swapAccounting) result.memory.swap = swap > 0 ? Math.max(swap, limit) : limit;
  }

  if (resources.hugepage_limits.length > 0) {
    result.hugepageLimits = resources.hugepage_limits.map((entry, index) => {
      if (!/^\d+(KB|MB|GB)$/.test(entry.page_size)) {
        throw new InvalidArgumentError(`linux.resources.hugepage_limits[${index}].page_size: ${JSON.stringify(entry.page_size)} is not a page size such as 2MB or 1GB`);
      }
      return { pageSize: entry.page_size, limit: number(entry.limit, `hugepage_limits[${index}].limit`) };
    });
  }

  if (Object.keys(resources.unified ?? {}).length > 0) result.unified = { ...resources.unified };
  return result;
}

function checkCpuset(value: string, field: string): string {
  if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(value)) {
    throw new InvalidArgumentError(`linux.resources.${field}: ${JSON.stringify(value)} is not a CPU or node list such as 0-2,4`);
  }
  return value;
}

function namespaces(sandbox: SandboxRecord, pid: PidNamespace): OciNamespace[] {
  const result: OciNamespace[] = [{ type: 'mount' }];
  if (sandbox.pinned.net) result.push({ type: 'network', path: sandbox.pinned.net });
  if (sandbox.pinned.ipc) result.push({ type: 'ipc', path: sandbox.pinned.ipc });
  if (sandbox.pinned.uts) result.push({ type: 'uts', path: sandbox.pinned.uts });
  if (pid.kind === 'new') result.push({ type: 'pid' });
  if (pid.kind === 'path') result.push({ type: 'pid', path: pid.path });
  return result;
}

/**
 * Returns the container's mounts: the standard filesystems, the pod's /dev/shm and its hostname,
 * resolv.conf and hosts files, then the request's mounts. A request mount at the same
 * destination replaces the default one.
 */
function containerMounts(inputs: SpecInputs, privileged: boolean): OciMount[] {
  const sandbox = inputs.sandbox;
  const sysOptions = ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'];
  const defaults: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: sysOptions },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: [...sysOptions, 'relatime'] },
    {
      destination: '/dev/shm',
      type: 'bind',
      source: sandbox.shmPath ?? '/dev/shm',
      options: ['rbind', 'rprivate', 'nosuid', 'nodev', 'noexec'],
    },
  ];
  for (const file of ['hostname', 'resolv.conf', 'hosts']) {
    defaults.push({ destination: `/etc/${file}`, type: 'bind', source: path.join(sandbox.dir, file), options: ['rbind', 'rprivate'] });
  }

  const requested = new Set(inputs.mounts.map((mount) => mount.destination));
  const kept = defaults.filter((mount) => !requested.has(mount.destination));

  // Parents before children, so that a mount at /a does not hide one at /a/b.
  const sorted = [...inputs.mounts].sort((a, b) => depth(a.destination) - depth(b.destination));
  return [...kept, ...sorted];
}

function depth(destination: string): number {
  return path.posix.normalize(destination).split('/').filter(Boolean).length;
}
