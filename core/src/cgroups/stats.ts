import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isErrno } from '../errors.js';
import type { CgroupLayout } from './layout.js';

/** CPU and memory figures of one cgroup, the same for cgroup v1 and v2. */
export interface CgroupUsage {
  /** Cumulative CPU time in nanoseconds. */
  cpuUsageNs: bigint;
  memoryUsageBytes: bigint;
  /** Usage minus inactive file cache: what the kubelet evicts on. */
  workingSetBytes: bigint;
  rssBytes: bigint;
  pageFaults: bigint;
  majorPageFaults: bigint;
  /** Memory limit, undefined when unlimited. */
  memoryLimitBytes?: bigint;
  processCount: bigint;
}

/** A v1 memory limit at or above this (the page-aligned maximum int64) means "no limit". */
const V1_UNLIMITED = 0x7ffffffffffff000n;

/**
 * Reads the usage of the cgroup at `cgroupPath` from the hierarchy that contains each controller:
 * the v1 controllers when mounted, else the cgroup2 tree. Returns undefined when the cgroup does
 * not exist (the container has exited and its cgroup is gone).
 */
export async function readCgroupUsage(layout: CgroupLayout, cgroupPath: string): Promise<CgroupUsage | undefined> {
  const relative = cgroupPath.replace(/^\/+/, '');
  try {
    const memoryV1 = layout.v1Mounts.get('memory');
    const cpuacctV1 = layout.v1Mounts.get('cpuacct');
    const pidsV1 = layout.v1Mounts.get('pids');
    const unified = layout.unifiedMount ? path.join(layout.unifiedMount, relative) : undefined;

    const cpuUsageNs = cpuacctV1
      ? BigInt((await readFile(path.join(cpuacctV1, relative, 'cpuacct.usage'), 'utf8')).trim())
      : (parseFlatKeyed(await readFile(path.join(unified!, 'cpu.stat'), 'utf8')).get('usage_usec') ?? 0n) * 1000n;

    let memory: Omit<CgroupUsage, 'cpuUsageNs' | 'processCount'>;
    if (memoryV1) {
      const dir = path.join(memoryV1, relative);
      const usage = BigInt((await readFile(path.join(dir, 'memory.usage_in_bytes'), 'utf8')).trim());
      const stat = parseFlatKeyed(await readFile(path.join(dir, 'memory.stat'), 'utf8'));
      const limit = BigInt((await readFile(path.join(dir, 'memory.limit_in_bytes'), 'utf8')).trim());
      const inactiveFile = stat.get('total_inactive_file') ?? 0n;
      memory = {
        memoryUsageBytes: usage,
        workingSetBytes: usage > inactiveFile ? usage - inactiveFile : 0n,
        rssBytes: stat.get('total_rss') ?? 0n,
        pageFaults: stat.get('total_pgfault') ?? 0n,
        majorPageFaults: stat.get('total_pgmajfault') ?? 0n,
        memoryLimitBytes: limit >= V1_UNLIMITED ? undefined : limit,
      };
    } else {
      const usage = BigInt((await readFile(path.join(unified!, 'memory.current'), 'utf8')).trim());
      const stat = parseFlatKeyed(await readFile(path.join(unified!, 'memory.stat'), 'utf8'));
      const max = (await readFile(path.join(unified!, 'memory.max'), 'utf8')).trim();
      const inactiveFile = stat.get('inactive_file') ?? 0n;
      memory = {
        memoryUsageBytes: usage,
        workingSetBytes: usage > inactiveFile ? usage - inactiveFile : 0n,
        rssBytes: stat.get('anon') ?? 0n,
        pageFaults: stat.get('pgfault') ?? 0n,
        majorPageFaults: stat.get('pgmajfault') ?? 0n,
        memoryLimitBytes: max === 'max' ? undefined : BigInt(max),
      };
    }

    const pidsFile = pidsV1 ? path.join(pidsV1, relative, 'pids.current') : path.join(unified!, 'pids.current');
    const processCount = await readFile(pidsFile, 'utf8').then((text) => BigInt(text.trim()), () => 0n);
    return { cpuUsageNs, ...memory, processCount };
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENODEV')) return undefined;
    throw err;
  }
}

/** Parses `key value` lines (memory.stat, cpu.stat). */
export function parseFlatKeyed(text: string): Map<string, bigint> {
  const values = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value && /^\d+$/.test(value)) values.set(key, BigInt(value));
  }
  return values;
}

/** Byte and error counters of one network interface from /proc/<pid>/net/dev. */
export interface InterfaceCounters {
  name: string;
  rxBytes: bigint;
  rxErrors: bigint;
  txBytes: bigint;
  txErrors: bigint;
}

/** Parses /proc/net/dev, skipping the loopback interface. */
export function parseNetDev(text: string): InterfaceCounters[] {
  const result: InterfaceCounters[] = [];
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const fields = line.slice(colon + 1).trim().split(/\s+/).map((field) => BigInt(field));
    if (name === 'lo' || fields.length < 16) continue;
    result.push({ name, rxBytes: fields[0]!, rxErrors: fields[2]!, txBytes: fields[8]!, txErrors: fields[10]! });
  }
  return result;
}
