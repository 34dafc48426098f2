/**
 * Image worker process: downloads and unpacks layers, so that the daemon's event loop never
 * waits on them. Several layer downloads share one worker, because each waits
 * on the network most of the time. The daemon starts it with fork() and talks to it over the IPC
 * channel.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import { BerthError } from '../errors.js';
import { ExtractionError, type WorkerRequest, type WorkerResponse } from './extract-protocol.js';
import type { LayerDownload } from './layer-download.js';
import { keepPaxValuesBinary } from './layer-extractor.js';
import { setParentDeathSignal, syncfs } from './libc.js';
import { AgentCache } from './registry-http.js';
import { UnsafeEntryError } from './tar-paths.js';

// A worker would outlive a daemon killed with SIGKILL, so the kernel is asked to end it too. The
// parent check covers a daemon that died before the prctl call.
setParentDeathSignal(os.constants.signals.SIGKILL);
if (process.ppid !== Number(process.env.BERTH_DAEMON_PID)) process.exit(1);
process.on('disconnect', () => process.exit(0));
// A normal exit on SIGTERM, so that exit hooks such as --cpu-prof's run.
process.on('SIGTERM', () => process.exit(0));

/** Downloads in progress, by target directory. */
const downloads = new Map<string, LayerDownload>();
const agentCaches = new Map<string, AgentCache>();
let downloadModule: Promise<typeof import('./layer-download.js')> | undefined;

/**
 * Loads the layer download code (tar-stream, fzstd) with the first layer request instead of at
 * start, so that the worker is ready to take requests sooner.
 */
function loadDownloadModule(): Promise<typeof import('./layer-download.js')> {
  downloadModule ??= import('./layer-download.js').then((module) => {
    keepPaxValuesBinary();
    return module;
  });
  return downloadModule;
}

function agentsFor(certsDir: string): AgentCache {
  let agents = agentCaches.get(certsDir);
  if (!agents) {
    agents = new AgentCache(certsDir);
    agentCaches.set(certsDir, agents);
  }
  return agents;
}

process.on('message', (request: WorkerRequest) => {
  void handle(request).then((response) => process.send?.(response));
});

async function handle(request: WorkerRequest): Promise<WorkerResponse> {
  try {
    switch (request.type) {
      case 'layer-fetch': {
        let download = downloads.get(request.job.targetDir);
        if (!download) {
          const { LayerDownload } = await loadDownloadModule();
          // Another request for the same layer may have started it during the import.
          download = downloads.get(request.job.targetDir) ?? new LayerDownload(request.job, agentsFor);
          downloads.set(request.job.targetDir, download);
        }
        const { attempt, result } = await download.fetch(request.request);
        return result ? { id: request.id, ok: true, attempt, result } : { id: request.id, ok: true, attempt };
      }
      case 'layer-finish': {
        const download = downloads.get(request.targetDir);
        if (!download) throw new Error(`no layer download for ${request.targetDir} in this worker`);
        const changed = download.applyLowerLayers(request.lowerDirs);
        if (changed > 0) await syncFilesystem(request.syncDir);
        downloads.delete(request.targetDir);
        return { id: request.id, ok: true };
      }
      case 'sync':
        await syncFilesystem(request.dir);
        return { id: request.id, ok: true };
      case 'layer-abort':
        downloads.get(request.targetDir)?.destroy();
        downloads.delete(request.targetDir);
        return { id: request.id, ok: true };
    }
  } catch (err) {
    const error = err as NodeJS.ErrnoException;
    return {
      id: request.id,
      ok: false,
      error: {
        message: error.message ?? String(err),
        code: error.code,
        kind: err instanceof BerthError ? err.kind : undefined,
        unsafeEntry: err instanceof UnsafeEntryError ? err.entry : undefined,
        extraction: err instanceof ExtractionError,
      },
    };
  }
}

/**
 * Flushes the filesystem holding `dir` with one syncfs(2). A layer is published by renaming its
 * directory, so its files must reach the disk before that rename does. Otherwise a power loss
 * after the rename could leave empty or partly written files in a layer that looks complete.
 * One syncfs covers every file and directory of the layer with a single journal commit, where an
 * fsync per file would force a commit for each of thousands of files. It also flushes unrelated
 * dirty data on the same filesystem. A kill -9 needs no flush at all, since the page cache
 * survives it.
 */
async function syncFilesystem(dir: string): Promise<void> {
  const handle = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await syncfs(handle.fd, dir);
  } finally {
    await handle.close();
  }
}
