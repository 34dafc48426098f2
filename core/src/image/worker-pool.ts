import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import { BerthError, InternalError, InvalidArgumentError, UnavailableError } from '../errors.js';
import { ExtractionError, type ExtractResult, type LayerJob, type WorkerRequest, type WorkerResponse } from './extract-protocol.js';
import type { BlobAttempt, BlobRequest } from './registry-http.js';
import { UnsafeEntryError } from './tar-paths.js';

type RequestBody = WorkerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;
type ResponseBody = Extract<WorkerResponse, { ok: true }>;

interface PendingRequest {
  resolve: (response: ResponseBody) => void;
  reject: (err: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  pending: Map<number, PendingRequest>;
  /** Layer downloads bound to this worker and not yet finished or aborted. */
  downloads: number;
  exited: boolean;
}

const WORKER_URL = new URL('./extract-worker.js', import.meta.url);

/** A layer download that lives in one worker thread from its first GET to its finish or abort. */
export interface LayerDownloadHandle {
  /**
   * Sends one GET of the blob and unpacks what arrives, continuing where the last attempt
   * stopped. Resolves with how the attempt ended (and the result once it is complete). Rejects
   * with InvalidArgumentError for a blob of another digest or size, UnsafeEntryError for an entry
   * that would leave the layer and ExtractionError when unpacking fails.
   */
  fetch(request: BlobRequest): Promise<{ attempt: BlobAttempt; result?: ExtractResult }>;
  /** Checks the layer against the extracted `lowerDirs` (topmost first), then flushes the filesystem holding `syncDir`. */
  finish(lowerDirs: string[], syncDir: string): Promise<void>;
  /** Stops the download in the worker; the caller deletes the target directory. Never rejects. */
  abort(): Promise<void>;
}

/**
 * A fixed set of worker threads that download and unpack layers and run mount calls. Each worker
 * serves many requests at once; a layer download stays on the worker it started on, and new ones
 * go to the worker with the fewest. A worker that dies fails its requests and is replaced.
 */
export class WorkerPool {
  private readonly workers: PoolWorker[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    size: number,
    private readonly log: Logger,
  ) {
    for (let index = 0; index < size; index++) this.workers.push(this.spawn());
  }

  /** Binds a new layer download to the least busy worker. */
  startLayer(job: LayerJob): LayerDownloadHandle {
    const entry = this.workers.reduce((best, candidate) => (candidate.downloads < best.downloads ? candidate : best));
    entry.downloads++;
    let open = true;
    const release = (): void => {
      if (open) entry.downloads--;
      open = false;
    };

    return {
      fetch: async (request) => {
        const response = await this.run(entry, { type: 'layer-fetch', job, request });
        if (!response.attempt) throw new InternalError('image worker thread returned no download outcome');
        return response.result ? { attempt: response.attempt, result: response.result } : { attempt: response.attempt };
      },
      finish: async (lowerDirs, syncDir) => {
        try {
          await this.run(entry, { type: 'layer-finish', targetDir: job.targetDir, lowerDirs, syncDir });
        } finally {
          release();
        }
      },
      abort: async () => {
        release();
        await this.run(entry, { type: 'layer-abort', targetDir: job.targetDir }).catch((err: unknown) => {
          this.log.debug({ path: job.targetDir, err }, 'layer download not stopped in its worker; the worker is gone');
        });
      },
    };
  }

  async mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
    await this.run(this.leastBusy(), { type: 'mount', source, target, fstype, flags, data });
  }

  async umount(target: string, flags: number): Promise<void> {
    await this.run(this.leastBusy(), { type: 'umount', target, flags });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(this.workers.map((entry) => entry.worker.terminate()));
  }

  private leastBusy(): PoolWorker {
    return this.workers.reduce((best, candidate) => (candidate.pending.size < best.pending.size ? candidate : best));
  }

  private run(entry: PoolWorker, body: RequestBody): Promise<ResponseBody> {
    if (this.closed) return Promise.reject(new Error('the image store is shutting down'));
    if (entry.exited) return Promise.reject(new Error('the image worker thread of this request exited'));
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      entry.pending.set(id, { resolve, reject });
      entry.worker.postMessage({ ...body, id } as WorkerRequest);
    });
  }

  private spawn(): PoolWorker {
    const entry: PoolWorker = { worker: new Worker(WORKER_URL), pending: new Map(), downloads: 0, exited: false };

    entry.worker.on('message', (response: WorkerResponse) => {
      const pending = entry.pending.get(response.id);
      if (!pending) return;
      entry.pending.delete(response.id);
      if (response.ok) pending.resolve(response);
      else pending.reject(workerError(response.error));
    });

    entry.worker.on('error', (err) => {
      this.log.error({ err }, 'image worker thread failed; starting a new one');
    });

    entry.worker.on('exit', (code) => {
      entry.exited = true;
      for (const pending of entry.pending.values()) pending.reject(new Error(`image worker thread exited with code ${code}`));
      entry.pending.clear();
      if (this.closed) return;
      const index = this.workers.indexOf(entry);
      if (index >= 0) this.workers[index] = this.spawn();
    });

    entry.worker.unref();
    return entry;
  }
}

/** Rebuilds the error a worker reported, with the class the daemon's callers test for. */
function workerError(error: Extract<WorkerResponse, { ok: false }>['error']): Error {
  if (error.unsafeEntry !== undefined) return new UnsafeEntryError(error.unsafeEntry, error.message.replace(/^tar entry "[^"]*": /, ''));
  if (error.extraction) return new ExtractionError(error.message);
  if (error.kind === 'InvalidArgument') return new InvalidArgumentError(error.message);
  if (error.kind === 'Unavailable') return new UnavailableError(error.message);
  if (error.kind !== undefined) return new BerthError(error.kind, error.message);
  return Object.assign(new Error(error.message), { code: error.code });
}
