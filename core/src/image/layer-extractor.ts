/**
 * Unpacks the entries of one layer tar into an empty directory. It runs in an image worker process
 * and uses synchronous fs calls freely, because it blocks only that worker.
 */
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  futimesSync,
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
import type tar from 'tar-stream';
import { lgetxattr, lsetxattr, mknod, S_IFBLK, S_IFCHR, S_IFIFO } from './libc.js';
import { ancestors, classifyWhiteout, normaliseEntryName, UnsafeEntryError } from './tar-paths.js';

const OPAQUE_XATTR = 'trusted.overlay.opaque';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';

/**
 * tar-stream decodes every PAX record value as UTF-8, which corrupts binary extended attribute
 * values such as `security.capability`. Its decoder is replaced with one that keeps each value's
 * bytes as a latin1 string; `path` and `linkpath` are decoded as UTF-8 here instead.
 */
export function keepPaxValuesBinary(): void {
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

export type EntryHeader = Omit<tar.Header, 'type'> & { type: tar.Header['type'] | 'pax-header' | 'pax-global-header' | 'gnu-long-path' | 'gnu-long-link-path' };
export type EntryStream = AsyncIterable<Buffer> & { resume(): unknown };

interface Lookup {
  type: 'absent' | 'directory' | 'symlink' | 'other';
  stats?: Stats;
}

/** A directory that this layer creates without an entry of its own, because an entry below it needs it. */
interface ImplicitDirectory {
  /** The first entry that needed it, for messages. */
  entry: string;
  /** Why it exists: as an ancestor of an entry (`parent`) or as the directory an opaque whiteout marks (`opaque`). */
  reason: 'parent' | 'opaque';
  /** A later directory entry of this layer gave it metadata of its own. */
  explicit: boolean;
}

/**
 * Unpacks one layer without looking at the layers below, so that layers can unpack in parallel.
 * What depends on them waits for `applyLowerLayers`. Each directory created without an entry of
 * its own must not be a symbolic link below, and it takes the owner, mode and mtime it has there.
 */
export class LayerExtractor {
  private readonly directories: PendingDirectory[] = [];
  private readonly implicitDirectories = new Map<string, ImplicitDirectory>();
  private readonly lowerCache = new Map<string, Lookup>();
  private lowerDirs: string[] = [];
  usedBytes = 0;
  inodes = 1;

  constructor(private readonly root: string) {}

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
        const implicit = this.implicitDirectories.get(relative);
        if (implicit) implicit.explicit = true;
        return;
      }

      case 'file':
      case 'contiguous-file': {
        // O_EXCL never opens an existing entry nor follows a symlink. An entry that repeats a path
        // replaces the earlier one, and trying the open first saves an lstat per file.
        const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
        let fd: number;
        try {
          fd = openSync(target, flags, 0o600);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          this.removeExisting(target);
          fd = openSync(target, flags, 0o600);
        }
        try {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            writeSync(fd, chunk);
            this.usedBytes += chunk.length;
          }
          this.inodes++;
          this.applyMetadata(target, header, mode, true, fd);
        } finally {
          closeSync(fd);
        }
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
        let linkTarget: string;
        try {
          linkTarget = normaliseEntryName(header.linkname ?? '');
        } catch (err) {
          // The message names the link entry, because the target is only the entry's linkname field.
          if (err instanceof UnsafeEntryError) throw new UnsafeEntryError(header.name, `hard link target ${err.message.replace(/^tar entry /, '')}`);
          throw err;
        }
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
  finishEntries(): void {
    for (const directory of this.directories.reverse()) {
      lutimesSync(directory.path, directory.mtime, directory.mtime);
    }
  }

  /**
   * Checks the implicitly created directories against the extracted layers below (topmost
   * first), in the order they were created, and gives each the metadata its lower directory has.
   * Returns how many directories it changed. Throws UnsafeEntryError naming the first entry whose
   * directory is a symbolic link below. Call after `finishEntries`; it changes only the inodes of
   * those directories, so the mtimes set there stay.
   */
  applyLowerLayers(lowerDirs: string[]): number {
    this.lowerDirs = lowerDirs;
    this.lowerCache.clear();
    let changed = 0;
    for (const [relative, implicit] of this.implicitDirectories) {
      const lower = this.lowerLookup(relative);
      if (lower.type === 'symlink') {
        if (implicit.reason === 'opaque') throw new UnsafeEntryError(implicit.entry, `"${relative}" is a symbolic link in a lower layer`);
        throw new UnsafeEntryError(implicit.entry, `its parent "${relative}" is a symbolic link in a lower layer; writing through it could leave the layer directory`);
      }
      if (implicit.explicit || lower.type !== 'directory' || !lower.stats) continue;

      // A later entry may have replaced the directory with a whiteout or a file.
      const host = path.join(this.root, relative);
      if (!lstatOrUndefined(host)?.isDirectory()) continue;
      lchownSync(host, lower.stats.uid, lower.stats.gid);
      chmodSync(host, lower.stats.mode & 0o7777);
      if (implicit.reason === 'parent') lutimesSync(host, lower.stats.mtime, lower.stats.mtime);
      changed++;
    }
    return changed;
  }

  /**
   * Checks that no ancestor of `relative` is a symbolic link in this layer and creates missing
   * ancestors. `applyLowerLayers` checks them against the lower layers later.
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

      mkdirSync(host, { mode: 0o755 });
      this.inodes++;
      this.addImplicitDirectory(ancestor, entry, 'parent');
    }
  }

  private ensureDirectory(entry: string, relative: string): void {
    const host = path.join(this.root, relative);
    const stats = lstatOrUndefined(host);
    if (stats?.isDirectory()) return;
    if (stats?.isSymbolicLink()) throw new UnsafeEntryError(entry, `"${relative}" is a symbolic link, not a directory`);
    if (stats) this.removeExisting(host);
    mkdirSync(host, { mode: 0o755 });
    this.inodes++;
    this.addImplicitDirectory(relative, entry, 'opaque');
  }

  private addImplicitDirectory(relative: string, entry: string, reason: ImplicitDirectory['reason']): void {
    const existing = this.implicitDirectories.get(relative);
    if (existing) existing.explicit = false;
    else this.implicitDirectories.set(relative, { entry, reason, explicit: false });
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

  /** Sets owner, mode, extended attributes and mtime, through `fd` when the entry is a regular file open for writing. */
  private applyMetadata(target: string, header: EntryHeader, mode: number, chmod: boolean, fd?: number): void {
    const pax = (header.pax ?? {}) as Record<string, string>;
    const uid = pax.uid !== undefined ? Number(pax.uid) : header.uid ?? 0;
    const gid = pax.gid !== undefined ? Number(pax.gid) : header.gid ?? 0;
    if (fd === undefined) lchownSync(target, uid, gid);
    else fchownSync(fd, uid, gid);
    // chown clears the set-user-ID and set-group-ID bits (and file capabilities), so the mode and
    // the extended attributes are set after it.
    if (chmod && fd === undefined) chmodSync(target, mode);
    else if (chmod) fchmodSync(fd!, mode);

    for (const [key, value] of Object.entries(pax)) {
      if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
      lsetxattr(target, key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value, 'latin1'));
    }

    const mtime = pax.mtime !== undefined ? new Date(Number(pax.mtime) * 1000) : header.mtime ?? new Date(0);
    if (header.type === 'directory') return;
    if (fd === undefined) lutimesSync(target, mtime, mtime);
    else futimesSync(fd, mtime, mtime);
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
