/**
 * One layer download in an image worker process. The blob streams from the registry through the
 * sha256 of the compressed bytes, the decompressor, the sha256 of the tar (the diff ID) and the
 * tar extraction at once. So the layer is unpacked when its last byte arrives, and the blob is
 * never written to disk.
 */
import { createHash, type Hash } from 'node:crypto';
import { PassThrough, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import tar from 'tar-stream';
import { errorMessage, InvalidArgumentError } from '../errors.js';
import { ExtractionError, type ExtractResult, type LayerJob } from './extract-protocol.js';
import { LayerExtractor, type EntryHeader, type EntryStream } from './layer-extractor.js';
import type { Compression } from './manifest.js';
import { AgentCache, discardBody, errorDetail, getFollowingRedirects, headerValue, TransientError, type BlobAttempt, type BlobRequest } from './registry-http.js';
import { UnsafeEntryError } from './tar-paths.js';

/**
 * Input and output chunk size of the decompressor. Each chunk costs a thread-pool round trip and
 * a pass through the stream machinery, so the 64 KiB socket reads are joined first. On a 2-core
 * x86-64 VM with Node 20.20, inflating 100 MiB of incompressible gzip took 210 ms of CPU when fed
 * in 64 KiB pieces and 56 ms in 1 MiB pieces, both with 1 MiB output chunks. Node's default output
 * chunk of 16 KiB cost another 2 to 3 times as much.
 */
const INFLATE_CHUNK_BYTES = 1024 * 1024;

export class LayerDownload {
  private readonly compressedHash: Hash = createHash('sha256');
  private readonly diffHash: Hash = createHash('sha256');
  private readonly decompressor: Transform;
  private readonly extractor: LayerExtractor;
  /** Settles when the tar is unpacked. It never rejects: `failure` is set to the error instead. */
  private readonly unpacked: Promise<void>;
  private failure: unknown;
  /** Bytes of the blob received so far, over all attempts. */
  private received = 0;
  /**
   * Received bytes not yet handed to the decompressor. Batches are reused once the decompressor
   * has consumed them: V8 starts a full garbage collection for about every 64 MiB of new Buffer
   * memory, so each fresh batch would add to that.
   */
  private batch?: Buffer;
  private batchLength = 0;
  private readonly spareBatches: Buffer[] = [];
  /** The last push of the body. A new attempt waits for it, so that bytes never interleave. */
  private lastPush: Promise<void> = Promise.resolve();
  private tarBytes = 0;

  constructor(
    private readonly job: LayerJob,
    private readonly agents: (certsDir: string) => AgentCache,
  ) {
    this.extractor = new LayerExtractor(job.targetDir);
    this.decompressor = decompressor(job.compression);

    const hasher = new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        this.diffHash.update(chunk);
        this.tarBytes += chunk.length;
        callback(null, chunk);
      },
    });

    const extract = tar.extract();
    extract.on('entry', (header, stream, next) => {
      this.extractor.entry(header as EntryHeader, stream as unknown as EntryStream).then(
        () => next(),
        (err: unknown) => {
          stream.resume();
          next(err as Error);
        },
      );
    });

    this.unpacked = pipeline(this.decompressor, hasher, extract).catch((err: unknown) => {
      this.failure = err;
    });
  }

  /**
   * Sends one GET of the blob and feeds the body to the unpacking. After an earlier attempt broke
   * off, the request has a Range header for the rest. A registry that responds 200 instead sends
   * the whole blob again, and the bytes already received are skipped. Returns `complete` with the
   * result once the blob is whole, its digest matches and the tar is unpacked. Throws
   * InvalidArgumentError when the blob has another digest or size, UnsafeEntryError for a tar
   * entry that would leave the layer, and ExtractionError when unpacking fails.
   */
  async fetch(request: BlobRequest): Promise<{ attempt: BlobAttempt; result?: ExtractResult }> {
    const { digest } = this.job;

    // pipeline() rejects as soon as a body breaks off, while a push may still wait for the
    // decompressor to drain.
    await this.lastPush.catch(() => undefined);

    const policy = {
      label: request.label,
      insecure: request.insecure,
      agents: this.agents(request.certsDir),
      authorization: () => Promise.resolve(request.authorization),
    };
    const headers: Record<string, string> = this.received > 0 ? { range: `bytes=${this.received}-` } : {};

    let response;
    try {
      response = await getFollowingRedirects(request.url, headers, policy);
    } catch (err) {
      if (err instanceof TransientError) return { attempt: { outcome: 'broken', message: err.message, received: this.received } };
      throw err;
    }

    if (response.statusCode !== 200 && response.statusCode !== 206) {
      const detail = response.statusCode >= 400 ? await errorDetail(response) : '';
      const { redirectedTo } = response;
      const challenge = redirectedTo === undefined ? headerValue(response.headers['www-authenticate']) : undefined;
      discardBody(response);
      return {
        attempt: {
          outcome: 'status',
          statusCode: response.statusCode,
          detail,
          ...(challenge !== undefined ? { challenge } : {}),
          ...(redirectedTo !== undefined ? { redirectedTo } : {}),
        },
      };
    }

    let skip = this.received;
    if (response.statusCode === 206) {
      const range = headerValue(response.headers['content-range']);
      const start = rangeStart(range);
      if (start === undefined || start > this.received) {
        discardBody(response);
        throw new InvalidArgumentError(
          `${request.label}: blob ${digest}: requested the bytes from ${this.received} on, but the registry returned the range "${range ?? ''}"`,
        );
      }
      skip = this.received - start;
    }

    // pipeline() reads the body in flowing mode, so its chunks arrive as undici delivers them. An
    // async iterator would copy whatever is buffered into a new Buffer on each read.
    const sink = new Writable({
      highWaterMark: 0,
      write: (chunk: Buffer, _encoding, callback) => {
        let data = chunk;
        if (skip > 0) {
          if (data.length <= skip) {
            skip -= data.length;
            callback();
            return;
          }
          data = data.subarray(skip);
          skip = 0;
        }
        this.lastPush = this.push(data);
        this.lastPush.then(() => callback(), callback);
      },
    });
    try {
      await pipeline(response.body, sink);
    } catch (err) {
      if (err instanceof InvalidArgumentError || err instanceof UnsafeEntryError) throw err;
      return { attempt: { outcome: 'broken', message: `the body broke off after ${this.received} bytes: ${errorMessage(err)}`, received: this.received } };
    }

    return { attempt: { outcome: 'complete' }, result: await this.complete(request.label) };
  }

  /** Applies what depends on the layers below (see LayerExtractor.applyLowerLayers) and returns the directories changed. */
  applyLowerLayers(lowerDirs: string[]): number {
    return this.extractor.applyLowerLayers(lowerDirs);
  }

  /** Stops the unpacking. The caller deletes the target directory. */
  destroy(): void {
    this.decompressor.destroy();
  }

  /** Hashes and unpacks one piece of the body, waiting while the unpacking is behind. */
  private async push(data: Buffer): Promise<void> {
    this.received += data.length;
    if (this.received > this.job.size) {
      throw new InvalidArgumentError(`blob ${this.job.digest} is larger than the ${this.job.size} bytes its descriptor gives`);
    }
    this.compressedHash.update(data);

    for (let offset = 0; offset < data.length; ) {
      this.batch ??= this.spareBatches.pop() ?? Buffer.allocUnsafe(INFLATE_CHUNK_BYTES);
      const copied = data.copy(this.batch, this.batchLength, offset);
      this.batchLength += copied;
      offset += copied;
      if (this.batchLength === this.batch.length) await this.flushBatch();
    }
  }

  /** Hands the batched bytes to the decompressor as one chunk. */
  private async flushBatch(): Promise<void> {
    const batch = this.batch;
    if (!batch || this.batchLength === 0) return;
    const chunk = batch.subarray(0, this.batchLength);
    this.batch = undefined;
    this.batchLength = 0;

    // After a decompression or tar error the rest is only hashed, so that a blob with the wrong
    // digest is reported as such instead of as a broken archive. An unsafe entry stops at once.
    if (this.failure === undefined && !this.decompressor.destroyed) {
      const accepted = this.decompressor.write(chunk, (err) => {
        if (!err) this.spareBatches.push(batch);
      });
      if (accepted) return;
      await waitForDrain(this.decompressor);
    }
    if (this.decompressor.destroyed) await this.unpacked;
    if (this.failure instanceof UnsafeEntryError) throw this.failure;
  }

  private async complete(label: string): Promise<ExtractResult> {
    const { digest, size } = this.job;
    if (this.received !== size) {
      throw new InvalidArgumentError(`${label}: blob ${digest}: received ${this.received} bytes, but its descriptor gives ${size}`);
    }
    const actual = `sha256:${this.compressedHash.digest('hex')}`;
    if (actual !== digest) {
      throw new InvalidArgumentError(`${label}: blob ${digest}: the content has digest ${actual}; the registry sent other content`);
    }

    await this.flushBatch();
    if (!this.decompressor.destroyed) this.decompressor.end();
    await this.unpacked;
    if (this.failure instanceof UnsafeEntryError) throw this.failure;
    if (this.failure !== undefined) throw new ExtractionError(errorMessage(this.failure));

    this.extractor.finishEntries();
    return {
      diffId: `sha256:${this.diffHash.digest('hex')}`,
      tarBytes: this.tarBytes,
      usedBytes: this.extractor.usedBytes,
      inodes: this.extractor.inodes,
    };
  }
}

/** Resolves on 'drain', or on 'close' when the stream was destroyed meanwhile. */
function waitForDrain(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** Returns the first byte offset of a `Content-Range: bytes START-END/SIZE` header. */
export function rangeStart(header: string | undefined): number | undefined {
  const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header?.trim() ?? '');
  if (!match) return undefined;
  const start = Number(match[1]);
  return Number.isSafeInteger(start) ? start : undefined;
}

function decompressor(compression: Compression): Transform {
  if (compression === 'gzip') return createGunzip({ chunkSize: INFLATE_CHUNK_BYTES });
  if (compression === 'none') return new PassThrough();

  const transform = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        decoder.push(chunk);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback) {
      try {
        decoder.push(new Uint8Array(0), true);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  const decoder = new Decompress((data) => transform.push(Buffer.from(data)));
  return transform;
}
