import { InvalidArgumentError } from '../errors.js';

/** Every Linux capability up to CAP_CHECKPOINT_RESTORE (40, Linux 5.9), in kernel order. */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/**
 * Normalises a capability name from a CRI request (`NET_ADMIN`, `net_admin`, `CAP_NET_ADMIN`)
 * to the OCI form. Returns `ALL` for the keyword. Throws InvalidArgumentError naming `field`.
 */
export function normalizeCapability(name: string, field: string): string {
  const upper = name.trim().toUpperCase();
  if (upper === 'ALL') return 'ALL';
  const full = upper.startsWith('CAP_') ? upper : `CAP_${upper}`;
  if (!ALL_CAPABILITIES.includes(full)) {
    throw new InvalidArgumentError(`${field}: unknown capability ${JSON.stringify(name)} (examples: NET_ADMIN, SYS_TIME, ALL)`);
  }
  return full;
}

/**
 * Works out a container's capability set: the defaults, minus drops, plus adds. `ALL` in drop
 * starts from nothing, `ALL` in add grants every capability; an explicit add wins over a drop.
 */
export function resolveCapabilities(defaults: string[], add: string[], drop: string[], privileged: boolean): string[] {
  if (privileged) return [...ALL_CAPABILITIES];

  const adds = add.map((name, index) => normalizeCapability(name, `capabilities.add_capabilities[${index}]`));
  const drops = drop.map((name, index) => normalizeCapability(name, `capabilities.drop_capabilities[${index}]`));
  if (adds.includes('ALL')) return [...ALL_CAPABILITIES];

  let result = drops.includes('ALL') ? [] : defaults.map((name) => normalizeCapability(name, 'runtime.default_capabilities'));
  result = result.filter((name) => !drops.includes(name));
  for (const name of adds) if (!result.includes(name)) result.push(name);
  return ALL_CAPABILITIES.filter((name) => result.includes(name));
}
