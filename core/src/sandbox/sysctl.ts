import { access } from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError, isErrno } from '../errors.js';

/**
 * Prefixes of the sysctls that the kernel scopes to a namespace a pod owns: the IPC namespace
 * (System V IPC and POSIX message queues) and the network namespace. Anything else would change
 * the whole node, so it is rejected.
 */
const IPC_SYSCTLS = [/^kernel\.shm(all|max|mni|_rmid_forced)$/, /^kernel\.msg(max|mnb|mni)$/, /^kernel\.sem$/, /^fs\.mqueue\.[a-z_]+$/];
const NET_SYSCTL = /^net\.[a-z0-9_-]+(\.[a-z0-9_.-]+)*$/i;

/** Maximum length of a sysctl value; real values (port ranges, semaphore tuples) are far shorter. */
const MAX_VALUE_LENGTH = 256;

/**
 * Letters, digits, space, tab and `. _ - : /` only. Newlines, `=`, `;`, `,` and `+` are the
 * characters a value could use to smuggle a second setting into a sysctl file or a runtime's
 * `key=value` list, so they are never allowed.
 */
const VALUE_PATTERN = /^[A-Za-z0-9 \t._:/-]+$/;

export interface SysctlScope {
  hostNetwork: boolean;
  hostIpc: boolean;
}

/**
 * Converts a sysctl name in either Kubernetes form to the dotted form: with `/` as separator
 * (`net/ipv4/conf/eth0.100/forwarding`) dots inside a component stay, so the two characters swap.
 */
export function normalizeSysctlName(name: string): string {
  const slash = name.indexOf('/');
  const dot = name.indexOf('.');
  if (slash >= 0 && (dot < 0 || slash < dot)) {
    return name.replace(/[./]/g, (separator) => (separator === '/' ? '.' : '/'));
  }
  return name;
}

/**
 * Validates a pod's sysctls and returns them with dotted names. Throws InvalidArgumentError
 * naming the sysctl, the value and what is allowed: only namespaced sysctls, only in a namespace
 * the pod owns, and only values that cannot carry a second setting.
 */
export function validateSysctls(sysctls: Record<string, string>, scope: SysctlScope): Record<string, string> {
  const result: Record<string, string> = {};

  for (const [rawName, value] of Object.entries(sysctls)) {
    const name = normalizeSysctlName(rawName);
    const where = `linux.sysctls[${JSON.stringify(rawName)}]`;

    if (!/^[a-z0-9_][a-z0-9_./-]*$/i.test(name) || name.includes('..') || name.includes('/.')) {
      throw new InvalidArgumentError(
        `${where}: invalid sysctl name; allowed are letters, digits, _ and - in components separated by . or /, such as net.ipv4.ip_forward`,
      );
    }

    const ipc = IPC_SYSCTLS.some((pattern) => pattern.test(name));
    const net = NET_SYSCTL.test(name);
    if (!ipc && !net) {
      throw new InvalidArgumentError(
        `${where}: sysctl is not namespaced, so a pod cannot set it (allowed: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)`,
      );
    }
    if (net && scope.hostNetwork) {
      throw new InvalidArgumentError(`${where}: net.* sysctls are not allowed in a pod that uses the host network`);
    }
    if (ipc && scope.hostIpc) {
      throw new InvalidArgumentError(`${where}: IPC sysctls are not allowed in a pod that uses the host IPC namespace`);
    }

    if (value.length === 0 || value.length > MAX_VALUE_LENGTH || !VALUE_PATTERN.test(value)) {
      throw new InvalidArgumentError(
        `${where}: invalid value ${JSON.stringify(value.slice(0, 80))}; allowed are 1 to ${MAX_VALUE_LENGTH} letters, digits, spaces, tabs and . _ - : /`,
      );
    }
    result[name] = value;
  }
  return result;
}

/** Per-device sysctl tables; their entries exist only once the pod's interfaces do. */
const PER_DEVICE = /^net\.ipv[46]\.(conf|neigh)\.(?!all\.|default\.)/;

/**
 * Checks that each sysctl (dotted names from validateSysctls) exists in the node's /proc/sys, so a
 * misspelt name fails RunPodSandbox with InvalidArgumentError instead of every container create.
 * Entries of per-device tables are skipped, because the pod's interfaces do not exist yet.
 */
export async function checkSysctlsExist(sysctls: Record<string, string>, procSys = '/proc/sys'): Promise<void> {
  for (const name of Object.keys(sysctls)) {
    if (PER_DEVICE.test(name)) continue;

    const file = path.join(procSys, name.replace(/[./]/g, (separator) => (separator === '.' ? '/' : '.')));
    try {
      await access(file);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      throw new InvalidArgumentError(`linux.sysctls[${JSON.stringify(name)}]: no such sysctl on this node (${file} does not exist)`);
    }
  }
}
