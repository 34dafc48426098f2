import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
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
  process: ChildProcess;
  pending: Map<number, PendingRequest>;
  /** Layer downloads on this worker whose blob is still arriving. */
  downloads: number;
  /** Layer downloads bound to this worker, from startLayer until their finish or abort. */
  layers: number;
  /** Set when the pool stops the worker for being idle. It then gets no more requests. */
  retired: boolean;
  exited: boolean;
  idleTimer?: NodeJS.Timeout;
}

const WORKER_PATH = fileURLToPath(new URL('./extract-worker.js', import.meta.url));

/**
 * V8 flags of the worker processes. Every 64 MiB or so of new Buffer memory makes V8 start a full
 * collection, and a pull allocates hundreds of MiB of socket and inflate buffers. With concurrent
 * marking, V8's 4 background threads then competed with the downloads for the cores. On a 2-core
 * VM (bench/pull.mjs, Node 20.20) they spent 200 ms of CPU on a 100 MiB pull, which took about
 * 100 ms longer than with single-threaded GC. The flag is process-wide, which is why the workers
 * are processes and not threads.
 */
const WORKER_EXEC_ARGV = ['--single-threaded-gc'];

/** A layer download that lives in one worker process from its first GET to its finish or abort. */
export interface LayerDownloadHandle {
  /**
   * Sends one GET of the blob and unpacks what arrives, continuing where the last attempt
   * stopped. Resolves with how the attempt ended (and the result once it is complete). Rejects
   * with InvalidArgumentError for a blob of another digest or size, UnsafeEntryError for an entry
   * that would leave the layer and ExtractionError when unpacking fails.
   */
  fetch(request: BlobRequest): Promise<{ attempt: BlobAttempt; result?: ExtractResult }>;
  /** Flushes the filesystem holding `dir` to disk (syncfs). */
  sync(dir: string): Promise<void>;
  /**
   * Checks the layer against the extracted `lowerDirs` (topmost first) and gives implicit
   * directories their metadata, then flushes the filesystem holding `syncDir` if that changed any.
   */
  finish(lowerDirs: string[], syncDir: string): Promise<void>;
  /** Stops the download in the worker. The caller deletes the target directory. Never rejects. */
  abort(): Promise<void>;
}

/** Size and idle policy of the worker pool. */
export interface WorkerPoolOptions {
  /** Maximum number of worker processes. */
  size: number;
  /** Milliseconds a worker with no request and no bound layer download lives on; 0 keeps it. */
  idleMs: number;
}

/**
 * Worker processes that download and unpack layers, started on demand. The pool starts none up
 * front. A new layer download goes to the worker with the fewest blobs arriving, and a new worker
 * is started for it while every worker has one arriving and the pool is below its size. A layer
 * download stays on the worker it started on until its finish or abort. A worker with no request and no layer download for `idleMs` is stopped. A worker that
 * dies fails its requests, and the next request that needs a worker starts a new one.
 */
export class WorkerPool {
  /** Workers that take new requests. Retired workers that have not exited yet are not in it. */
  private readonly workers: PoolWorker[] = [];
  /** Every worker process that has not exited, retired ones included, for close(). */
  private readonly running = new Set<PoolWorker>();
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly options: WorkerPoolOptions,
    private readonly log: Logger,
  ) {
    if (!Number.isInteger(options.size) || options.size < 1) throw new RangeError(`image worker pool size must be a positive integer, not ${options.size}`);
    if (!Number.isFinite(options.idleMs) || options.idleMs < 0) throw new RangeError(`image worker idle time must be 0 or more milliseconds, not ${options.idleMs}`);
  }

  /** Number of worker processes that have not exited, retired ones included. */
  get workerCount(): number {
    return this.running.size;
  }

  /**
   * Binds a new layer download to the worker with the fewest blobs arriving, or to a new worker
   * when all have one and the pool has room. Throws when the pool is closed.
   */
  startLayer(job: LayerJob): LayerDownloadHandle {
    const entry = this.workerForDownload();
    entry.downloads++;
    entry.layers++;
    this.markBusy(entry);
    let arriving = true;
    let bound = true;
    const stopArriving = (): void => {
      if (arriving) entry.downloads--;
      arriving = false;
    };
    const release = (): void => {
      stopArriving();
      if (bound) {
        entry.layers--;
        bound = false;
        this.markIdleIfUnused(entry);
      }
    };

    return {
      fetch: async (request) => {
        const response = await this.run(entry, { type: 'layer-fetch', job, request });
        if (!response.attempt) throw new InternalError('image worker process returned no download outcome');
        if (response.attempt.outcome === 'complete') stopArriving();
        return response.result ? { attempt: response.attempt, result: response.result } : { attempt: response.attempt };
      },
      sync: async (dir) => {
        await this.run(entry, { type: 'sync', dir });
      },
      finish: async (lowerDirs, syncDir) => {
        try {
          await this.run(entry, { type: 'layer-finish', targetDir: job.targetDir, lowerDirs, syncDir });
        } finally {
          release();
        }
      },
      abort: async () => {
        // The abort request goes out before the release, so that the worker cannot be retired
        // for being idle while it still holds the download.
        const aborted = this.run(entry, { type: 'layer-abort', targetDir: job.targetDir });
        release();
        await aborted.catch((err: unknown) => {
          this.log.debug({ path: job.targetDir, err }, 'layer download not stopped in its worker; the worker is gone');
        });
      },
    };
  }

  /** Stops every worker and waits for them to exit. Requests after this reject. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled(
      [...this.running].map(async (entry) => {
        clearTimeout(entry.idleTimer);
        if (entry.exited) return;
        const exited = once(entry.process, 'exit');
        // Referenced again so the event loop waits for the exit even when nothing else is left.
        entry.process.ref();
        entry.process.kill('SIGTERM');
        await exited;
      }),
    );
  }

  private workerForDownload(): PoolWorker {
    this.checkOpen();
    const best = this.workers.reduce<PoolWorker | undefined>((found, candidate) => (found === undefined || candidate.downloads < found.downloads ? candidate : found), undefined);
    if (best !== undefined && (best.downloads === 0 || this.workers.length >= this.options.size)) return best;
    return this.spawn();
  }

  private checkOpen(): void {
    if (this.closed) throw new UnavailableError('the image store is shutting down');
  }

  private run(entry: PoolWorker, body: RequestBody): Promise<ResponseBody> {
    if (this.closed) return Promise.reject(new UnavailableError('the image store is shutting down'));
    if (entry.exited || entry.retired) return Promise.reject(new Error('the image worker process of this request exited'));
    this.markBusy(entry);
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      entry.pending.set(id, { resolve, reject });
      // A busy worker keeps the daemon alive: during start-up recovery nothing else may.
      entry.process.channel?.ref();
      entry.process.send({ ...body, id } as WorkerRequest, (err) => {
        if (!err || !entry.pending.delete(id)) return;
        this.afterResponse(entry);
        reject(err);
      });
    });
  }

  private markBusy(entry: PoolWorker): void {
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
  }

  private afterResponse(entry: PoolWorker): void {
    if (entry.pending.size === 0) entry.process.channel?.unref();
    this.markIdleIfUnused(entry);
  }

  /** Starts the idle timer of a worker that has no request and no layer download bound to it. */
  private markIdleIfUnused(entry: PoolWorker): void {
    if (this.options.idleMs === 0 || entry.exited || entry.retired || this.closed) return;
    if (entry.pending.size > 0 || entry.layers > 0) return;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = setTimeout(() => this.retire(entry), this.options.idleMs);
    // The timer alone must not keep the daemon alive.
    entry.idleTimer.unref();
  }

  /**
   * Stops an idle worker. It leaves the list of workers that take requests at once, in the same
   * turn of the event loop as the idle check, so no request can reach it after that check.
   */
  private retire(entry: PoolWorker): void {
    entry.idleTimer = undefined;
    if (entry.exited || entry.retired || this.closed || entry.pending.size > 0 || entry.layers > 0) return;
    entry.retired = true;
    this.remove(entry);
    this.log.debug({ pid: entry.process.pid, idle_ms: this.options.idleMs }, 'stopping idle image worker process');
    entry.process.kill('SIGTERM');
  }

  private remove(entry: PoolWorker): void {
    const index = this.workers.indexOf(entry);
    if (index >= 0) this.workers.splice(index, 1);
  }

  private spawn(): PoolWorker {
    const child = fork(WORKER_PATH, [], {
      execArgv: WORKER_EXEC_ARGV,
      env: { ...process.env, BERTH_DAEMON_PID: String(process.pid) },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const entry: PoolWorker = { process: child, pending: new Map(), downloads: 0, layers: 0, retired: false, exited: false };
    this.workers.push(entry);
    this.running.add(entry);
    this.log.debug({ pid: child.pid, workers: this.running.size }, 'image worker process started');

    child.on('message', (message) => {
      const response = message as WorkerResponse;
      const pending = entry.pending.get(response.id);
      if (!pending) return;
      entry.pending.delete(response.id);
      this.afterResponse(entry);
      if (response.ok) pending.resolve(response);
      else pending.reject(workerError(response.error));
    });

    child.on('error', (err) => {
      this.log.error({ err, pid: child.pid }, 'image worker process failed');
      // A fork that failed (EAGAIN, ENOMEM) may emit no exit event, so the entry is dropped here.
      if (child.pid === undefined) this.onExit(entry, null, null);
    });

    child.on('exit', (code, signal) => this.onExit(entry, code, signal));

    // The daemon's gRPC server keeps the daemon alive, and the workers alone must not.
    child.unref();
    child.channel?.unref();
    return entry;
  }

  private onExit(entry: PoolWorker, code: number | null, signal: NodeJS.Signals | null): void {
    if (entry.exited) return;
    entry.exited = true;
    clearTimeout(entry.idleTimer);
    this.remove(entry);
    this.running.delete(entry);
    for (const pending of entry.pending.values()) pending.reject(new Error(`image worker process exited (code ${code}, signal ${signal})`));
    entry.pending.clear();
    if (this.closed) return;
    if (entry.retired) {
      this.log.debug({ pid: entry.process.pid, code, signal, workers: this.running.size }, 'idle image worker process exited');
      return;
    }
    this.log.error({ pid: entry.process.pid, code, signal }, 'image worker process exited; the next request that needs one starts a new one');
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
