import { after, before, describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import fsPromises, { mkdtemp, readdir, rm } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { AttachmentCache, type AttachmentRecord } from '../src/cache.js';

function attachment(containerId: string): Omit<AttachmentRecord, 'kind'> {
  return {
    containerId,
    ifName: 'eth0',
    network: { cniVersion: '1.0.0', name: 'net1', plugins: [{ type: 'bridge' }] } as AttachmentRecord['network'],
    file: '/etc/cni/net.d/10-net1.conflist',
    cniArgs: 'K8S_POD_NAME=web',
    capabilityArgs: {},
    netns: '/run/netns/test',
    createdAt: 1,
  };
}

describe('AttachmentCache', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'berth-cni-cache-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('save flushes the record and its directories', async () => {
    const cache = new AttachmentCache(path.join(dir, 'cache'), pino({ level: 'silent' }));
    await cache.init();
    const events: string[] = [];

    // Record every fsync and rename through fs/promises, which the core's atomic write imports from.
    const realOpen = fsPromises.open;
    const realRename = fsPromises.rename;
    mock.method(fsPromises, 'open', async (target: string, ...rest: unknown[]) => {
      const handle = await (realOpen as (...args: unknown[]) => Promise<fsPromises.FileHandle>)(target, ...rest);
      const realSync = handle.sync.bind(handle);
      handle.sync = async () => {
        events.push(`sync ${path.relative(dir, target).replace(/\.[0-9a-f]+\.tmp$/, '.tmp')}`);
        return realSync();
      };
      return handle;
    });
    mock.method(fsPromises, 'rename', async (from: string, to: string) => {
      events.push(`rename ${path.relative(dir, to)}`);
      return realRename(from, to);
    });
    syncBuiltinESMExports();

    try {
      await cache.save(attachment('sandbox1'));
      await cache.save({ ...attachment('sandbox1'), createdAt: 2 });
    } finally {
      mock.restoreAll();
      syncBuiltinESMExports();
    }

    assert.deepEqual(events, [
      'sync cache',
      'sync cache/sandbox1/.net1.eth0.json.tmp',
      'rename cache/sandbox1/net1.eth0.json',
      'sync cache/sandbox1',
      // The second save finds the sandbox directory in place.
      'sync cache/sandbox1/.net1.eth0.json.tmp',
      'rename cache/sandbox1/net1.eth0.json',
      'sync cache/sandbox1',
    ]);
    const records = await cache.list('sandbox1');
    assert.equal(records.length, 1);
    assert.equal(records[0]!.kind, 'berth-cni-attachment/v1');
    assert.equal(records[0]!.createdAt, 2);
    assert.deepEqual(await readdir(path.join(dir, 'cache/sandbox1')), ['net1.eth0.json']);
  });
});
