/**
 * Worker thread that unpacks layer tars and runs mount calls, so that the daemon's event loop never
 * waits on them. It uses synchronous fs calls freely, because it blocks only itself.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  createReadStream,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parentPort } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import tar from 'tar-stream';
import { lgetxattr, lsetxattr, mknod, mount, S_IFBLK, S_IFCHR, S_IFIFO, umount2 } from './libc.js';
import { ancestors, classifyWhiteout, normaliseEntryName, UnsafeEntryError } from './tar-paths.js';
import type { WorkerRequest, WorkerResponse, ExtractJob, ExtractResult } from './extract-protocol.js';

const OPAQUE_XATTR = 'trusted.overlay.opaque';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';

keepPaxValuesBinary();

parentPort?.on('message', (request: WorkerRequest) => {
  void handle(request).then((response) => parentPort?.postMessage(response));
});

async function handle(request: WorkerRequest): Promise<WorkerResponse> {
  try {
    switch (request.type) {
      case 'extract':
        return { id: request.id, ok: true, result: await extractLayer(request.job) };
      case 'mount':
        mount(request.source, request.target, request.fstype, request.flags, request.data);
        return { id: request.id, ok: true };
      case 'umount':
        umount2(request.target, request.flags);
        return { id: request.id, ok: true };
    }
  } catch (err) {
    const error = err as NodeJS.ErrnoException;
    return {
      id: request.id,
      ok: false,
      error: { message: error.message ?? String(err), code: error.code, unsafeEntry: err instanceof UnsafeEntryError ? err.entry : undefined },
    };
  }
}

/**
 * tar-stream decodes every PAX record value as UTF-8, which corrupts binary extended attribute
 * values such as `security.capability`. Its decoder is replaced with one that keeps each value's
 * bytes as a latin1 string; `path` and `linkpath` are decoded as UTF-8 here instead.
 */
function keepPaxValuesBinary(): void {
  const require = createRequire(import.meta.url);
  const headersFile = path.join(path.dirname(require.resolve('tar-stream')), 'headers.js');
  const headers = require(headersFile) as { decodePax: (buffer: Buffer) => Record<string, string> };
  headers.decodePax = (buffer: Buffer): Record<string, string> => {
    const result: Record<string, string> = {};
    let rest = buffer;
    while (rest.length > 0) {
      const space = rest.indexOf(0x20);
      if (space < 0) break;
      const length = Number.parseInt(rest.subarray(0, space).toString('ascii'), 10);
      if (!Number.isSafeInteger(length) || length <= space + 1 || length > rest.length) break;

      const record = rest.subarray(space + 1, length - 1);
      const equals = record.indexOf(0x3d);
      if (equals >= 0) {
        const key = record.subarray(0, equals).toString('utf8');
        const value = record.subarray(equals + 1);
        result[key] = key.startsWith(PAX_XATTR_PREFIX) ? value.toString('latin1') : value.toString('utf8');
      }
      rest = rest.subarray(length);
    }
    return result;
  };
}

/** Metadata applied to directories after their contents, so that adding entries does not change their mtime. */
interface PendingDirectory {
  path: string;
  mtime: Date;
}

type EntryHeader = Omit<tar.Header, 'type'> & { type: tar.Header['type'] | 'pax-header' | 'pax-global-header' | 'gnu-long-path' | 'gnu-long-link-path' };
type EntryStream = AsyncIterable<Buffer> & { resume(): unknown };

interface Lookup {
  type: 'absent' | 'directory' | 'symlink' | 'other';
  stats?: Stats;
}

class LayerExtractor {
  private readonly directories: PendingDirectory[] = [];
  private readonly lowerCache = new Map<string, Lookup>();
  usedBytes = 0;
  inodes = 1;

  constructor(
    private readonly root: string,
    private readonly lowerDirs: string[],
  ) {}

  async entry(header: EntryHeader, stream: EntryStream): Promise<void> {
    const type = header.type ?? 'file';
    if (type === 'pax-global-header' || type === 'pax-header' || type === 'gnu-long-path' || type === 'gnu-long-link-path') {
      stream.resume();
      return;
    }

    const relative = normaliseEntryName(header.name);
    if (relative === '') {
      // The root entry ("./") carries only the layer root's metadata, which overlay ignores.
      stream.resume();
      return;
    }

    const whiteout = classifyWhiteout(relative);
    if (whiteout.kind === 'meta') {
      stream.resume();
      return;
    }
    if (whiteout.kind === 'opaque') {
      stream.resume();
      if (whiteout.dir !== '') {
        this.prepareParents(header.name, whiteout.dir);
        this.ensureDirectory(header.name, whiteout.dir);
      }
      lsetxattr(path.join(this.root, whiteout.dir), OPAQUE_XATTR, Buffer.from('y'));
      return;
    }
    if (whiteout.kind === 'whiteout') {
      stream.resume();
      this.prepareParents(header.name, whiteout.target);
      const target = path.join(this.root, whiteout.target);
      this.removeExisting(target);
      mknod(target, S_IFCHR | 0o000, 0, 0);
      this.inodes++;
      return;
    }

    this.prepareParents(header.name, relative);
    const target = path.join(this.root, relative);
    const mode = (header.mode ?? 0o644) & 0o7777;

    switch (type) {
      case 'directory': {
        stream.resume();
        const existing = lstatOrUndefined(target);
        if (existing && !existing.isDirectory()) this.removeExisting(target);
        if (!existing || !existing.isDirectory()) {
          mkdirSync(target, { mode: 0o700 });
          this.inodes++;
        }
        this.applyMetadata(target, header, mode, true);
        this.directories.push({ path: target, mtime: header.mtime ?? new Date(0) });
        return;
      }

      case 'file':
      case 'contiguous-file': {
        this.removeExisting(target);
        const fd = openSync(target, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            writeSync(fd, chunk);
            this.usedBytes += chunk.length;
          }
        } finally {
          closeSync(fd);
        }
        this.inodes++;
        this.applyMetadata(target, header, mode, true);
        return;
      }

      case 'symlink': {
        stream.resume();
        this.removeExisting(target);
        symlinkSync(header.linkname ?? '', target);
        this.inodes++;
        this.applyMetadata(target, header, mode, false);
        return;
      }

      case 'link': {
        stream.resume();
        const linkTarget = normaliseEntryName(header.linkname ?? '');
        if (linkTarget === '') throw new UnsafeEntryError(header.name, 'hard link names no target');
        for (const ancestor of ancestors(linkTarget)) {
          if (lstatOrUndefined(path.join(this.root, ancestor))?.isSymbolicLink()) {
            throw new UnsafeEntryError(header.name, `hard link target "${linkTarget}" passes through the symbolic link "${ancestor}"`);
          }
        }
        const source = path.join(this.root, linkTarget);
        const sourceStats = lstatOrUndefined(source);
        if (!sourceStats) throw new UnsafeEntryError(header.name, `hard link target "${linkTarget}" is not an earlier entry of this layer`);
        if (sourceStats.isDirectory()) throw new UnsafeEntryError(header.name, `hard link target "${linkTarget}" is a directory`);
        if (source === target) return;
        this.removeExisting(target);
        linkSync(source, target);
        return;
      }

      case 'character-device':
      case 'block-device':
      case 'fifo': {
        stream.resume();
        this.removeExisting(target);
        const fileType = type === 'fifo' ? S_IFIFO : type === 'block-device' ? S_IFBLK : S_IFCHR;
        mknod(target, fileType | mode, header.devmajor ?? 0, header.devminor ?? 0);
        this.inodes++;
        this.applyMetadata(target, header, mode, true);
        return;
      }

      default:
        throw new UnsafeEntryError(header.name, `unsupported tar entry type "${String(type)}"`);
    }
  }

  /** Sets directory mtimes last, deepest first, because creating entries inside changed them. */
  finish(): void {
    for (const directory of this.directories.reverse()) {
      lutimesSync(directory.path, directory.mtime, directory.mtime);
    }
  }

  /**
   * Checks that no ancestor of `relative` is a symbolic link, in this layer or in the merged view
   * of the lower layers, and creates missing ancestors with the metadata the lower layers give
   * them.
   */
  private prepareParents(entry: string, relative: string): void {
    for (const ancestor of ancestors(relative)) {
      const host = path.join(this.root, ancestor);
      const stats = lstatOrUndefined(host);
      if (stats?.isSymbolicLink()) {
        throw new UnsafeEntryError(entry, `its parent "${ancestor}" is a symbolic link created by an earlier entry of this layer; writing through it could leave the layer directory`);
      }
      if (stats?.isDirectory()) continue;
      if (stats) this.removeExisting(host);

      const lower = this.lowerLookup(ancestor);
      if (lower.type === 'symlink') {
        throw new UnsafeEntryError(entry, `its parent "${ancestor}" is a symbolic link in a lower layer; writing through it could leave the layer directory`);
      }
      mkdirSync(host, { mode: 0o755 });
      this.inodes++;
      if (lower.type === 'directory' && lower.stats) {
        lchownSync(host, lower.stats.uid, lower.stats.gid);
        chmodSync(host, lower.stats.mode & 0o7777);
        this.directories.push({ path: host, mtime: lower.stats.mtime });
      }
    }
  }

  private ensureDirectory(entry: string, relative: string): void {
    const host = path.join(this.root, relative);
    const stats = lstatOrUndefined(host);
    if (stats?.isDirectory()) return;
    if (stats?.isSymbolicLink()) throw new UnsafeEntryError(entry, `"${relative}" is a symbolic link, not a directory`);
    if (stats) this.removeExisting(host);
    const lower = this.lowerLookup(relative);
    if (lower.type === 'symlink') throw new UnsafeEntryError(entry, `"${relative}" is a symbolic link in a lower layer`);
    mkdirSync(host, { mode: 0o755 });
    this.inodes++;
    if (lower.type === 'directory' && lower.stats) {
      lchownSync(host, lower.stats.uid, lower.stats.gid);
      chmodSync(host, lower.stats.mode & 0o7777);
    }
  }

  /**
   * Looks `relative` up in the lower layers as overlayfs would show it: the topmost layer that has
   * it wins, and a whiteout or an opaque parent directory hides the layers below.
   */
  private lowerLookup(relative: string): Lookup {
    const cached = this.lowerCache.get(relative);
    if (cached) return cached;

    let result: Lookup = { type: 'absent' };
    const parent = path.dirname(relative);
    for (const dir of this.lowerDirs) {
      const stats = lstatOrUndefined(path.join(dir, relative));
      if (stats) {
        if (stats.isCharacterDevice() && stats.rdev === 0) break;
        result = { type: stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : 'other', stats };
        break;
      }
      if (parent !== '.' && lgetxattr(path.join(dir, parent), OPAQUE_XATTR)?.toString() === 'y') break;
    }
    this.lowerCache.set(relative, result);
    return result;
  }

  private removeExisting(target: string): void {
    const stats = lstatOrUndefined(target);
    if (!stats) return;
    if (stats.isDirectory()) rmSync(target, { recursive: true, force: true });
    else unlinkSync(target);
  }

  private applyMetadata(target: string, header: EntryHeader, mode: number, chmod: boolean): void {
    const pax = (header.pax ?? {}) as Record<string, string>;
    const uid = pax.uid !== undefined ? Number(pax.uid) : header.uid ?? 0;
    const gid = pax.gid !== undefined ? Number(pax.gid) : header.gid ?? 0;
    lchownSync(target, uid, gid);
    // chown clears the set-user-ID and set-group-ID bits, so the mode is set after it.
    if (chmod) chmodSync(target, mode);

    for (const [key, value] of Object.entries(pax)) {
      if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
      lsetxattr(target, key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value, 'latin1'));
    }

    const mtime = pax.mtime !== undefined ? new Date(Number(pax.mtime) * 1000) : header.mtime ?? new Date(0);
    if (header.type !== 'directory') lutimesSync(target, mtime, mtime);
  }
}

function lstatOrUndefined(target: string): Stats | undefined {
  try {
    return lstatSync(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

function decompressor(compression: ExtractJob['compression']): Transform {
  if (compression === 'gzip') return createGunzip();
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

/**
 * Unpacks one layer blob into `job.targetDir` and returns the digest of the uncompressed tar, which
 * the caller compares with the config's diff ID.
 */
async function extractLayer(job: ExtractJob): Promise<ExtractResult> {
  const extractor = new LayerExtractor(job.targetDir, job.lowerDirs);
  const hash = createHash('sha256');
  let tarBytes = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      tarBytes += chunk.length;
      callback(null, chunk);
    },
  });

  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    extractor.entry(header as EntryHeader, stream as unknown as EntryStream).then(
      () => next(),
      (err: unknown) => {
        stream.resume();
        next(err as Error);
      },
    );
  });

  await pipeline(createReadStream(job.blobPath), decompressor(job.compression), hasher, extract);
  extractor.finish();
  return { diffId: `sha256:${hash.digest('hex')}`, tarBytes, usedBytes: extractor.usedBytes, inodes: extractor.inodes };
}
