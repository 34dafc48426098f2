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
  exited: boolean;
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

/**
 * A fixed set of worker processes that download and unpack layers and run mount calls. Each
 * worker serves many requests at once. A layer download stays on the worker it started on, and
 * new ones go to the worker with the fewest. A worker that dies fails its requests and is
 * replaced.
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

  /** Binds a new layer download to the worker with the fewest blobs arriving. */
  startLayer(job: LayerJob): LayerDownloadHandle {
    const entry = this.workers.reduce((best, candidate) => (candidate.downloads < best.downloads ? candidate : best));
    entry.downloads++;
    let arriving = true;
    const release = (): void => {
      if (arriving) entry.downloads--;
      arriving = false;
    };

    return {
      fetch: async (request) => {
        const response = await this.run(entry, { type: 'layer-fetch', job, request });
        if (!response.attempt) throw new InternalError('image worker process returned no download outcome');
        if (response.attempt.outcome === 'complete') release();
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
    await Promise.allSettled(
      this.workers.map(async (entry) => {
        if (entry.exited) return;
        const exited = once(entry.process, 'exit');
        // Referenced again so the event loop waits for the exit even when nothing else is left.
        entry.process.ref();
        entry.process.kill('SIGTERM');
        await exited;
      }),
    );
  }

  private leastBusy(): PoolWorker {
    return this.workers.reduce((best, candidate) => (candidate.pending.size < best.pending.size ? candidate : best));
  }

  private run(entry: PoolWorker, body: RequestBody): Promise<ResponseBody> {
    if (this.closed) return Promise.reject(new Error('the image store is shutting down'));
    if (entry.exited) return Promise.reject(new Error('the image worker process of this request exited'));
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      entry.pending.set(id, { resolve, reject });
      // A busy worker keeps the daemon alive: during start-up recovery nothing else may.
      entry.process.channel?.ref();
      entry.process.send({ ...body, id } as WorkerRequest, (err) => {
        if (!err || !entry.pending.delete(id)) return;
        reject(err);
      });
    });
  }

  private spawn(): PoolWorker {
    const child = fork(WORKER_PATH, [], {
      execArgv: WORKER_EXEC_ARGV,
      env: { ...process.env, BERTH_DAEMON_PID: String(process.pid) },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const entry: PoolWorker = { process: child, pending: new Map(), downloads: 0, exited: false };

    child.on('message', (message) => {
      const response = message as WorkerResponse;
      const pending = entry.pending.get(response.id);
      if (!pending) return;
      entry.pending.delete(response.id);
      if (entry.pending.size === 0) entry.process.channel?.unref();
      if (response.ok) pending.resolve(response);
      else pending.reject(workerError(response.error));
    });

    child.on('error', (err) => {
      this.log.error({ err, pid: child.pid }, 'image worker process failed');
    });

    child.on('exit', (code, signal) => {
      entry.exited = true;
      for (const pending of entry.pending.values()) pending.reject(new Error(`image worker process exited (code ${code}, signal ${signal})`));
      entry.pending.clear();
      if (this.closed) return;
      this.log.error({ pid: child.pid, code, signal }, 'image worker process exited; starting a new one');
      const index = this.workers.indexOf(entry);
      if (index >= 0) this.workers[index] = this.spawn();
    });

    // The daemon's gRPC server keeps the daemon alive, and the workers alone must not.
    child.unref();
    child.channel?.unref();
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
