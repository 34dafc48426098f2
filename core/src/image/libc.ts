import os from 'node:os';
import koffi from 'koffi';

/**
 * The libc calls Node has no API for: device nodes, extended attributes, mounts, syncfs and
 * prctl. Each
 * function throws an Error whose `code` is the errno name (EPERM, ENOTSUP, ...), as Node's own
 * fs errors do. Usable from worker threads.
 */
const lib = koffi.load('libc.so.6');
const mknodCall = lib.func('int mknod(const char *path, uint32_t mode, uint64_t dev)');
const lsetxattrCall = lib.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)');
const lgetxattrCall = lib.func('long lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)');
const mountCall = lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)');
const umount2Call = lib.func('int umount2(const char *target, int flags)');
const syncfsCall = lib.func('int syncfs(int fd)');
const prctlCall = lib.func('int prctl(int option, ...)');

const PR_SET_PDEATHSIG = 1;

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const MNT_DETACH = 2;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

function fail(call: string, target: string): never {
  const errno = koffi.errno();
  const code = errnoNames.get(errno) ?? `errno ${errno}`;
  const err = new Error(`${call} ${target}: ${code}`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = errno;
  err.path = target;
  throw err;
}

/** Encodes a device number as glibc's makedev() does. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

/** Creates a device node or FIFO; `mode` includes the file type bits (S_IFCHR, ...). */
export function mknod(target: string, mode: number, major = 0, minor = 0): void {
  if (mknodCall(target, mode, makedev(major, minor)) !== 0) fail('mknod', target);
}

/** Sets an extended attribute on `target` itself, never on a symlink's target. */
export function lsetxattr(target: string, name: string, value: Buffer): void {
  if (lsetxattrCall(target, name, value, value.length, 0) !== 0) fail(`lsetxattr ${name}`, target);
}

/** Reads an extended attribute of `target` itself; undefined when it is not set. */
export function lgetxattr(target: string, name: string): Buffer | undefined {
  const buffer = Buffer.alloc(4096);
  const length = Number(lgetxattrCall(target, name, buffer, buffer.length));
  if (length < 0) {
    const code = errnoNames.get(koffi.errno());
    if (code === 'ENODATA' || code === 'ENOTSUP' || code === 'EOPNOTSUPP') return undefined;
    fail(`lgetxattr ${name}`, target);
  }
  return buffer.subarray(0, length);
}

/** mount(2). `data` is the filesystem's option string, at most one page long for overlayfs. */
export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (mountCall(source, target, fstype, flags, data) !== 0) fail(`mount ${fstype}`, target);
}

/** umount2(2). */
export function umount2(target: string, flags: number): void {
  if (umount2Call(target, flags) !== 0) fail('umount', target);
}

/**
 * mount(2) on a thread of libuv's pool, for callers on the daemon's event loop. koffi 3 saves
 * the errno of an async call on its thread and restores it while the callback runs
 * (AsyncCall::Complete in koffi's src/koffi/src/call.cc), so the error names the call's errno.
 */
export function mountAsync(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
  return new Promise((resolve, reject) => {
    mountCall.async(source, target, fstype, flags, data, (err: unknown, result: number) => {
      settleAsyncCall(err, result, `mount ${fstype}`, target, resolve, reject);
    });
  });
}

/** umount2(2) on a thread of libuv's pool; errors as for mountAsync. */
export function umount2Async(target: string, flags: number): Promise<void> {
  return new Promise((resolve, reject) => {
    umount2Call.async(target, flags, (err: unknown, result: number) => {
      settleAsyncCall(err, result, 'umount', target, resolve, reject);
    });
  });
}

function settleAsyncCall(err: unknown, result: number, call: string, target: string, resolve: () => void, reject: (reason: Error) => void): void {
  if (err) {
    reject(err as Error);
    return;
  }
  try {
    if (result !== 0) fail(call, target);
    resolve();
  } catch (failure) {
    reject(failure as Error);
  }
}

/**
 * syncfs(2): writes the dirty data of the filesystem holding the open file `fd` to disk. It runs
 * on one of koffi's threads, because the flush can take long and the caller's event loop has
 * other downloads to serve. `target` names the file in errors.
 */
export function syncfs(fd: number, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    syncfsCall.async(fd, (err: unknown, result: number) => {
      if (err) {
        reject(err as Error);
        return;
      }
      if (result === 0) {
        resolve();
        return;
      }
      // errno belongs to koffi's thread, so the failed call is repeated here to read it.
      try {
        if (syncfsCall(fd) !== 0) fail('syncfs', target);
        resolve();
      } catch (failure) {
        reject(failure as Error);
      }
    });
  });
}

/** prctl(PR_SET_PDEATHSIG): the kernel sends `signal` to this process when its parent exits. */
export function setParentDeathSignal(signal: number): void {
  if (prctlCall(PR_SET_PDEATHSIG, 'unsigned long', signal) !== 0) fail('prctl PR_SET_PDEATHSIG', String(signal));
}
