import type { Compression } from './manifest.js';

/** Messages between the daemon and its extraction workers. */
export interface ExtractJob {
  blobPath: string;
  compression: Compression;
  /** Empty directory that receives the layer's files. */
  targetDir: string;
  /** Extracted directories of the layers below, topmost first. */
  lowerDirs: string[];
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

export type WorkerRequest =
  | { id: number; type: 'extract'; job: ExtractJob }
  | { id: number; type: 'mount'; source: string; target: string; fstype: string; flags: number; data: string }
  | { id: number; type: 'umount'; target: string; flags: number };

export type WorkerResponse =
  | { id: number; ok: true; result?: ExtractResult }
  | { id: number; ok: false; error: { message: string; code?: string; unsafeEntry?: string } };
