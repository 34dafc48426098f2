/** A tar entry that would write outside the layer directory or is otherwise unusable. */
export class UnsafeEntryError extends Error {
  constructor(
    readonly entry: string,
    reason: string,
  ) {
    super(`tar entry "${entry}": ${reason}`);
    this.name = 'UnsafeEntryError';
  }
}

/**
 * Normalises a tar entry name to a path relative to the layer root: a leading `./`, repeated and
 * trailing slashes and `.` components go. Returns an empty string for the root itself. Throws
 * UnsafeEntryError for an absolute name, a `..` component or a NUL byte, because each could
 * place the entry outside the layer directory.
 */
export function normaliseEntryName(name: string): string {
  if (name.includes('\0')) throw new UnsafeEntryError(name, 'the name contains a NUL byte');
  if (name.startsWith('/')) throw new UnsafeEntryError(name, 'absolute names are not allowed in a layer');

  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw new UnsafeEntryError(name, '".." components are not allowed in a layer');
    parts.push(part);
  }
  return parts.join('/');
}

/** Returns each ancestor of a normalised path, outermost first: `a/b/c` → `a`, `a/b`. */
export function ancestors(relative: string): string[] {
  const parts = relative.split('/');
  const result: string[] = [];
  for (let index = 1; index < parts.length; index++) result.push(parts.slice(0, index).join('/'));
  return result;
}

/** Prefix of whiteout file names in a layer tar (OCI image spec, "Whiteouts"). */
export const WHITEOUT_PREFIX = '.wh.';
/** Name of the entry that marks its directory opaque. */
export const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** Prefix of AUFS bookkeeping entries (`.wh..wh.plnk`, ...), which carry no content. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';

export type WhiteoutKind =
  | { kind: 'none' }
  | { kind: 'opaque'; dir: string }
  | { kind: 'whiteout'; target: string }
  | { kind: 'meta' };

/** Classifies a normalised entry path as a plain entry, an opaque marker, a whiteout or AUFS metadata. */
export function classifyWhiteout(relative: string): WhiteoutKind {
  const slash = relative.lastIndexOf('/');
  const dir = slash >= 0 ? relative.slice(0, slash) : '';
  const base = relative.slice(slash + 1);
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', dir };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta' };

  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') throw new UnsafeEntryError(relative, `whiteout names no file`);
  return { kind: 'whiteout', target: dir === '' ? name : `${dir}/${name}` };
}
