import { mkdir, open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { StartupError, isErrno } from '../errors.js';

/** Another daemon owns the state directory; start-up must stop before it touches anything there. */
export class StateInUseError extends StartupError {}

const LOCK_FILE = 'berth.pid';

/**
 * Takes the state directory `dir` for this process by creating `dir/berth.pid` with its PID.
 * A lock file whose process is gone, or is no berth process (a PID reused after a reboot), is
 * replaced. Returns the release function. Two daemons sharing a root would each run start-up
 * recovery and delete the other's temporary files and half-created records.
 */
export async function lockStateDir(dir: string): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const file = path.join(dir, LOCK_FILE);

  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return () => releaseLock(file);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }

    const owner = await lockOwner(file);
    if (owner !== undefined && owner !== process.pid && (await isBerthProcess(owner))) {
      throw new StateInUseError(
        `state directory ${dir} is in use by berth process ${owner} (${file}); stop that daemon or pass another --root/--runroot`,
      );
    }
    await unlink(file).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
  throw new StateInUseError(`state directory ${dir}: cannot create ${file}: another process keeps creating it`);
}

async function releaseLock(file: string): Promise<void> {
  if ((await lockOwner(file)) !== process.pid) return;
  await unlink(file).catch((err: unknown) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });
}

async function lockOwner(file: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await readFile(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

async function isBerthProcess(pid: number): Promise<boolean> {
  try {
    const commandLine = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return commandLine.some((arg) => /(^|\/)(berth|cli\.js)$/.test(arg));
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return false;
    throw err;
  }
}
