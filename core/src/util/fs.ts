import { constants, type Stats } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { isErrno } from '../errors.js';

/** Returns whether `file` exists; errors other than ENOENT (EACCES, EIO) are raised. */
export async function pathExists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

const READ_CHUNK_BYTES = 64 * 1024;

/** Rejection of a file that `readRegularFile` opened: not a regular file, or over the size limit. */
export class FileLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export interface RegularFileLimits {
  /** Largest accepted file size in bytes. */
  maxBytes: number;
  /** Open with O_NOFOLLOW, so a symlink as the last path component fails with ELOOP. */
  noFollow?: boolean;
}

/**
 * Reads a regular file of at most `limits.maxBytes` bytes as UTF-8. The file is opened with
 * O_NONBLOCK, so a FIFO cannot stall the open, and fstat of the open descriptor decides, so the
 * checked file is the one read. Raises FileLimitError for a file that is not regular (FIFO,
 * device, directory) or is larger than the limit, also when it grows while it is read. Open
 * errors (ENOENT, EACCES, ELOOP) are raised as they are.
 */
export async function readRegularFile(file: string, limits: RegularFileLimits): Promise<string> {
  let flags = constants.O_RDONLY | constants.O_NONBLOCK;
  if (limits.noFollow) flags |= constants.O_NOFOLLOW;

  const handle = await open(file, flags);
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new FileLimitError(`${file} is not a regular file (it is ${fileKind(stats)})`);
    if (stats.size > limits.maxBytes) {
      throw new FileLimitError(`${file} is ${stats.size} bytes, larger than the limit of ${limits.maxBytes} bytes`);
    }

    // Reading up to one byte past the limit detects a file that grew after fstat.
    const chunks: Buffer[] = [];
    let length = 0;
    while (length <= limits.maxBytes) {
      const chunk = Buffer.alloc(Math.min(READ_CHUNK_BYTES, limits.maxBytes + 1 - length));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, length);
      if (bytesRead === 0) break;
      chunks.push(chunk.subarray(0, bytesRead));
      length += bytesRead;
    }
    if (length > limits.maxBytes) {
      throw new FileLimitError(`${file} grew past the limit of ${limits.maxBytes} bytes while it was read`);
    }
    return Buffer.concat(chunks, length).toString('utf8');
  } finally {
    await handle.close();
  }
}

function fileKind(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  if (stats.isSymbolicLink()) return 'a symbolic link';
  return 'an unknown file type';
}
