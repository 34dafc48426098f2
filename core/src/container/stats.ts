import { readFile } from 'node:fs/promises';
import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import type { Logger } from '../log.js';
import { errorMessage } from '../errors.js';
import type { ImageStore } from '../image/store.js';
import type { RuntimeHandlerRegistry } from '../runtime/handlers.js';
import { detectCgroupLayout } from '../cgroups/layout.js';
import { parseNetDev, readCgroupUsage, type CgroupUsage } from '../cgroups/stats.js';
import type { ContainerStats } from '../cri/generated/runtime/v1/ContainerStats.js';
import type { PodSandboxStats } from '../cri/generated/runtime/v1/PodSandboxStats.js';
import type { SandboxRecord } from '../sandbox/record.js';
import type { ContainerRecord } from './record.js';

/** Last CPU reading per container, to turn cumulative CPU time into a rate. */
interface CpuSample {
  timeNs: bigint;
  usageNs: bigint;
}

/**
 * Container and pod statistics from the cgroups (v1 or v2), plus writable layer usage from the
 * image store. Pod figures are the sums over the pod's running containers.
 */
@injectable()
export class StatsService {
  private readonly cpuSamples = new Map<string, CpuSample>();

  constructor(
    @inject(Tokens.ImageStore) private readonly images: ImageStore,
    @inject(Tokens.RuntimeHandlers) private readonly handlers: RuntimeHandlerRegistry,
  ) {}

  /** Stats of one container; an exited container has only its attributes and writable layer. */
  async containerStats(record: ContainerRecord, log: Logger): Promise<ContainerStats> {
    const timestamp = BigInt(Date.now()) * 1_000_000n;
    const usage = record.state === 'running' ? await readCgroupUsage(await detectCgroupLayout(), record.cgroupsPath) : undefined;

    const stats: ContainerStats = {
      attributes: {
        id: record.id,
        metadata: record.config.metadata,
        labels: record.config.labels,
        annotations: record.config.annotations,
      },
      writable_layer: await this.writableLayer(record, timestamp, log),
    };
    if (usage) {
      stats.cpu = {
        timestamp: String(timestamp),
        usage_core_nano_seconds: { value: String(usage.cpuUsageNs) },
        usage_nano_cores: { value: String(this.cpuRate(record.id, timestamp, usage.cpuUsageNs)) },
      };
      stats.memory = memoryUsage(usage, timestamp);
    }
    return stats;
  }

  /** Stats of a pod: its containers' sums, process count and network counters. */
  async sandboxStats(sandbox: SandboxRecord, members: ContainerRecord[], log: Logger): Promise<PodSandboxStats> {
    const timestamp = BigInt(Date.now()) * 1_000_000n;
    const containerStats: ContainerStats[] = [];
    const layout = await detectCgroupLayout();
    let total: CgroupUsage | undefined;

    for (const record of members) {
      containerStats.push(await this.containerStats(record, log));
      if (record.state !== 'running') continue;
      const usage = await readCgroupUsage(layout, record.cgroupsPath);
      if (!usage) continue;
      total = total ? addUsage(total, usage) : usage;
    }

    const stats: PodSandboxStats = {
      attributes: {
        id: sandbox.id,
        metadata: sandbox.config.metadata,
        labels: sandbox.config.labels,
        annotations: sandbox.config.annotations,
      },
      linux: { containers: containerStats },
    };
    if (total) {
      stats.linux!.cpu = {
        timestamp: String(timestamp),
        usage_core_nano_seconds: { value: String(total.cpuUsageNs) },
        usage_nano_cores: { value: String(this.cpuRate(`pod:${sandbox.id}`, timestamp, total.cpuUsageNs)) },
      };
      stats.linux!.memory = memoryUsage(total, timestamp);
      stats.linux!.process = { timestamp: String(timestamp), process_count: { value: String(total.processCount) } };
    }

    const network = await this.networkUsage(sandbox, members, timestamp, log);
    if (network) stats.linux!.network = network;
    return stats;
  }

  /** Drops the CPU sample of a removed container or pod. */
  forget(id: string): void {
    this.cpuSamples.delete(id);
    this.cpuSamples.delete(`pod:${id}`);
  }

  private cpuRate(key: string, timeNs: bigint, usageNs: bigint): bigint {
    const previous = this.cpuSamples.get(key);
    this.cpuSamples.set(key, { timeNs, usageNs });
    if (!previous || timeNs <= previous.timeNs || usageNs < previous.usageNs) return 0n;
    // nanoseconds of CPU per second of wall time, in nano-cores
    return ((usageNs - previous.usageNs) * 1_000_000_000n) / (timeNs - previous.timeNs);
  }

  private async writableLayer(record: ContainerRecord, timestamp: bigint, log: Logger): Promise<ContainerStats['writable_layer']> {
    try {
      const [usage, filesystem] = await Promise.all([this.images.rootfsUsage(record.id), this.images.filesystemUsage()]);
      return {
        timestamp: String(timestamp),
        fs_id: { mountpoint: filesystem.mountpoint },
        used_bytes: { value: String(usage.usedBytes) },
        inodes_used: { value: String(usage.inodesUsed) },
      };
    } catch (err) {
      log.warn({ container_id: record.id, err: errorMessage(err) }, 'cannot measure the writable layer');
      return null;
    }
  }

  /** Counters of the pod's network namespace, read through one of its running containers. */
  private async networkUsage(sandbox: SandboxRecord, members: ContainerRecord[], timestamp: bigint, log: Logger): Promise<NonNullable<PodSandboxStats['linux']>['network'] | undefined> {
    if (!sandbox.pinned.net) return undefined;
    for (const record of members.filter((member) => member.state === 'running')) {
      try {
        const state = await this.handlers.get(record.runtimeHandler).driver.state(record.id);
        if (state.pid <= 0) continue;
        const interfaces = parseNetDev(await readFile(`/proc/${state.pid}/net/dev`, 'utf8')).map((counters) => ({
          name: counters.name,
          rx_bytes: { value: String(counters.rxBytes) },
          rx_errors: { value: String(counters.rxErrors) },
          tx_bytes: { value: String(counters.txBytes) },
          tx_errors: { value: String(counters.txErrors) },
        }));
        return {
          timestamp: String(timestamp),
          default_interface: interfaces.find((entry) => entry.name === 'eth0') ?? interfaces[0] ?? null,
          interfaces,
        };
      } catch (err) {
        log.debug({ container_id: record.id, err: errorMessage(err) }, 'cannot read network counters through this container');
      }
    }
    return undefined;
  }
}

function memoryUsage(usage: CgroupUsage, timestamp: bigint): ContainerStats['memory'] {
  const memory: NonNullable<ContainerStats['memory']> = {
    timestamp: String(timestamp),
    working_set_bytes: { value: String(usage.workingSetBytes) },
    usage_bytes: { value: String(usage.memoryUsageBytes) },
    rss_bytes: { value: String(usage.rssBytes) },
    page_faults: { value: String(usage.pageFaults) },
    major_page_faults: { value: String(usage.majorPageFaults) },
  };
  if (usage.memoryLimitBytes !== undefined) {
    const available = usage.memoryLimitBytes > usage.workingSetBytes ? usage.memoryLimitBytes - usage.workingSetBytes : 0n;
    memory.available_bytes = { value: String(available) };
  }
  return memory;
}

function addUsage(a: CgroupUsage, b: CgroupUsage): CgroupUsage {
  return {
    cpuUsageNs: a.cpuUsageNs + b.cpuUsageNs,
    memoryUsageBytes: a.memoryUsageBytes + b.memoryUsageBytes,
    workingSetBytes: a.workingSetBytes + b.workingSetBytes,
    rssBytes: a.rssBytes + b.rssBytes,
    pageFaults: a.pageFaults + b.pageFaults,
    majorPageFaults: a.majorPageFaults + b.majorPageFaults,
    processCount: a.processCount + b.processCount,
  };
}
