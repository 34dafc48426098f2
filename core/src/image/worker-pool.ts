import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { ExtractJob, ExtractResult, WorkerRequest, WorkerResponse } from './extract-protocol.js';
import { UnsafeEntryError } from './tar-paths.js';

type RequestBody = WorkerRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

interface PendingRequest {
  body: RequestBody;
  resolve: (result: ExtractResult | undefined) => void;
  reject: (err: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  current?: { id: number; request: PendingRequest };
}

const WORKER_URL = new URL('./extract-worker.js', import.meta.url);

/**
 * A fixed set of worker threads that unpack layers and run mount calls. Requests queue when every
 * worker is busy. A worker that dies fails its request and is replaced.
 */
export class WorkerPool {
  private readonly workers: PoolWorker[] = [];
  private readonly queue: PendingRequest[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    size: number,
    private readonly log: Logger,
  ) {
    for (let index = 0; index < size; index++) this.workers.push(this.spawn());
  }

  /** Unpacks a layer blob; rejects with UnsafeEntryError for an entry that would leave the layer. */
  async extract(job: ExtractJob): Promise<ExtractResult> {
    const result = await this.run({ type: 'extract', job });
    if (!result) throw new Error('extraction worker returned no result');
    return result;
  }

  async mount(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
    await this.run({ type: 'mount', source, target, fstype, flags, data });
  }

  async umount(target: string, flags: number): Promise<void> {
    await this.run({ type: 'umount', target, flags });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.queue.splice(0)) pending.reject(new Error('the image store is shutting down'));
    await Promise.allSettled(this.workers.map((entry) => entry.worker.terminate()));
  }

  private run(body: RequestBody): Promise<ExtractResult | undefined> {
    if (this.closed) return Promise.reject(new Error('the image store is shutting down'));
    return new Promise((resolve, reject) => {
      this.queue.push({ body, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const entry of this.workers) {
      if (entry.current) continue;
      const request = this.queue.shift();
      if (!request) return;
      const id = this.nextId++;
      entry.current = { id, request };
      // A busy worker keeps the process alive: during start-up recovery nothing else may.
      entry.worker.ref();
      entry.worker.postMessage({ ...request.body, id } as WorkerRequest);
    }
  }

  private spawn(): PoolWorker {
    const entry: PoolWorker = { worker: new Worker(WORKER_URL) };

    entry.worker.on('message', (response: WorkerResponse) => {
      const current = entry.current;
      if (!current || current.id !== response.id) return;
      entry.current = undefined;
      entry.worker.unref();
      if (response.ok) {
        current.request.resolve(response.result);
      } else {
        const error = response.error.unsafeEntry !== undefined
          ? new UnsafeEntryError(response.error.unsafeEntry, response.error.message.replace(/^tar entry "[^"]*": /, ''))
          : Object.assign(new Error(response.error.message), { code: response.error.code });
        current.request.reject(error);
      }
      this.dispatch();
    });

    entry.worker.on('error', (err) => {
      this.log.error({ err }, 'image worker thread failed; starting a new one');
      entry.current?.request.reject(err);
      entry.current = undefined;
    });

    entry.worker.on('exit', (code) => {
      if (this.closed) return;
      entry.current?.request.reject(new Error(`image worker thread exited with code ${code}`));
      const index = this.workers.indexOf(entry);
      if (index >= 0) this.workers[index] = this.spawn();
      this.dispatch();
    });

    entry.worker.unref();
    return entry;
  }
}
