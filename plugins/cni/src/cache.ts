import { mkdir, readFile, readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { errorMessage, isErrno, syncDirectory, writeJsonAtomic, type Logger } from '@berth/core';
import type { CapabilityArgs } from './runtime-config.js';
import type { CniResult, NetworkConfList } from './spec.js';

const RECORD_KIND = 'berth-cni-attachment/v1';

/**
 * One attachment of a pod to a network, as stored before ADD starts and completed with the
 * result after it succeeds: everything DEL and CHECK need, however the config files changed since.
 */
export interface AttachmentRecord {
  kind: typeof RECORD_KIND;
  containerId: string;
  ifName: string;
  /** The network config list exactly as ADD used it. */
  network: NetworkConfList;
  /** File the config came from, for messages only. */
  file: string;
  cniArgs: string;
  capabilityArgs: CapabilityArgs;
  netns: string;
  /** Set once ADD of the whole list succeeded. */
  result?: CniResult;
  /** Unix time in milliseconds of the ADD. */
  createdAt: number;
}

/**
 * Attachment records on disk: one directory per sandbox, one file per network and interface.
 * Writes go through a flushed temporary file, a rename and a flush of the directory, so a crash
 * leaves the old or the new record.
 */
export class AttachmentCache {
  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  async save(record: Omit<AttachmentRecord, 'kind'>): Promise<void> {
    const dir = path.join(this.dir, record.containerId);
    // A new sandbox directory is an entry of the cache directory, which must reach the disk too.
    if ((await mkdir(dir, { recursive: true, mode: 0o700 })) !== undefined) await syncDirectory(this.dir);

    const file = this.fileFor(record.containerId, record.network.name, record.ifName);
    await writeJsonAtomic(file, { kind: RECORD_KIND, ...record });
  }

  /** Returns the sandbox's records, oldest first; unreadable files are logged and left in place. */
  async list(containerId: string): Promise<AttachmentRecord[]> {
    const dir = path.join(this.dir, containerId);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }

    const records: AttachmentRecord[] = [];
    for (const name of names.filter((entry) => entry.endsWith('.json'))) {
      const file = path.join(dir, name);
      try {
        const record = JSON.parse(await readFile(file, 'utf8')) as AttachmentRecord;
        if (record.kind !== RECORD_KIND) throw new Error(`unknown record kind ${JSON.stringify(record.kind)}`);
        records.push(record);
      } catch (err) {
        this.log.error({ err, file, sandbox_id: containerId }, `cannot read CNI attachment record: ${errorMessage(err)}`);
      }
    }
    return records.sort((a, b) => a.createdAt - b.createdAt);
  }

  async remove(containerId: string, network: string, ifName: string): Promise<void> {
    await rm(this.fileFor(containerId, network, ifName), { force: true });
    try {
      await rmdir(path.join(this.dir, containerId));
    } catch (err) {
      // Another attachment of the sandbox still has its record there.
      if (!isErrno(err, 'ENOTEMPTY') && !isErrno(err, 'ENOENT') && !isErrno(err, 'EEXIST')) throw err;
    }
  }

  private fileFor(containerId: string, network: string, ifName: string): string {
    return path.join(this.dir, containerId, `${network}.${ifName}.json`);
  }
}
