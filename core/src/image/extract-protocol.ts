import type { ErrorKind } from '../errors.js';
import type { Compression } from './manifest.js';
import type { BlobAttempt, BlobRequest } from './registry-http.js';

/** Messages between the daemon and its image worker processes. */

/** A layer blob to download and unpack. */
export interface LayerJob {
  /** Empty directory that receives the layer's files. It also names the download in the worker. */
  targetDir: string;
  compression: Compression;
  /** Digest and size of the compressed blob, from the manifest. */
  digest: string;
  size: number;
}

export interface ExtractResult {
  /** sha256 of the uncompressed tar stream. */
  diffId: string;
  tarBytes: number;
  /** Bytes of regular file content written. */
  usedBytes: number;
  /** Files, directories and other inodes created, the layer root included. */
  inodes: number;
}

/** A failure of the unpacking side: decompression, tar parsing or writing files. */
export class ExtractionError extends Error {}

export type WorkerRequest =
  /** One GET of the blob. The first one for a `targetDir` starts its download. */
  | { id: number; type: 'layer-fetch'; job: LayerJob; request: BlobRequest }
  /** Flushes the filesystem holding `dir` to disk. */
  | { id: number; type: 'sync'; dir: string }
  /** Checks the unpacked layer against the layers below, and flushes again what that changed. */
  | { id: number; type: 'layer-finish'; targetDir: string; lowerDirs: string[]; syncDir: string }
  /** Stops a download and drops its state. The daemon deletes its directory. */
  | { id: number; type: 'layer-abort'; targetDir: string };

export type WorkerResponse =
  | { id: number; ok: true; attempt?: BlobAttempt; result?: ExtractResult }
  | {
      id: number;
      ok: false;
      error: { message: string; code?: string; kind?: ErrorKind; unsafeEntry?: string; extraction?: boolean };
    };
