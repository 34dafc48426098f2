import { spawn } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import { errorMessage, isErrno } from '../../errors.js';

/** Files of one container's monitor, all inside the driver's per-container directory. */
export interface MonitorPaths {
  /** conmon's persist dir: it writes `exit` and, after an OOM kill, `oom` here. */
  dir: string;
  conmonPidFile: string;
  containerPidFile: string;
  /** conmon's own stdout and stderr, read when it fails before reporting a PID. */
  conmonLog: string;
  /** Short directory for the attach socket, which must fit a unix socket path. */
  socketDir: string;
}

export function monitorPaths(containerDir: string, socketDir: string): MonitorPaths {
  return {
    dir: containerDir,
    conmonPidFile: path.join(containerDir, 'conmon.pid'),
    containerPidFile: path.join(containerDir, 'container.pid'),
    conmonLog: path.join(containerDir, 'conmon.log'),
    socketDir,
  };
}

export interface ConmonLaunch {
  conmon: string;
  runtime: string;
  /** Global runtime flags (e.g. `--root`), placed before the runtime's command. */
  runtimeArgs: string[];
  id: string;
  bundlePath: string;
  exitsDir: string;
  /** CRI log file; undefined sends the container's output nowhere. */
  logPath?: string;
  stdin: boolean;
  stdinOnce: boolean;
  tty: boolean;
  systemdCgroup: boolean;
  /** Passes `--no-pivot` to `create`, for a rootfs on ramfs where pivot_root fails. */
  noPivot: boolean;
  paths: MonitorPaths;
  /** Time to wait for conmon to report the container PID. */
  timeoutMs: number;
}

/** The runtime or conmon failed to create the container; `message` carries the runtime's error. */
export class MonitorStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MonitorStartError';
  }
}

/**
 * Starts conmon for one container and waits until the runtime has created it. Returns the
 * container's host PID.
 *
 * conmon forks into the background, runs `<runtime> create` and reports the container's PID on
 * the sync pipe as `{"data": <pid>}`, or a negative value and `message` on failure. It then
 * owns the container's stdio, writes the CRI log and records the exit code in `<exitsDir>/<id>`.
 */
export async function startConmon(launch: ConmonLaunch): Promise<number> {
  const args = conmonArgs(launch);
  const logHandle = await open(launch.paths.conmonLog, 'w', 0o600);

  let child;
  try {
    child = spawn(launch.conmon, args, {
      // fd 3 is the sync pipe; Node makes it a socket pair, which conmon writes like a pipe.
      stdio: ['ignore', logHandle.fd, logHandle.fd, 'pipe'],
      detached: true,
      env: { ...process.env, _OCI_SYNCPIPE: '3' },
    });
  } finally {
    await logHandle.close();
  }
  child.unref();

  const sync = child.stdio[3] as Socket;
  const message = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      sync.destroy();
      reject(new MonitorStartError(`conmon did not report the container PID within ${launch.timeoutMs} ms`));
    }, launch.timeoutMs);

    sync.setEncoding('utf8');
    sync.on('data', (chunk: string) => {
      text += chunk;
      const newline = text.indexOf('\n');
      if (newline >= 0 || text.trim().endsWith('}')) {
        clearTimeout(timer);
        sync.destroy();
        resolve(newline >= 0 ? text.slice(0, newline) : text);
      }
    });
    sync.on('error', (err) => {
      clearTimeout(timer);
      reject(new MonitorStartError(`conmon sync pipe failed: ${errorMessage(err)}`));
    });
    sync.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new MonitorStartError(`cannot start conmon ${launch.conmon}: ${errorMessage(err)}`));
    });
  });

  return parseSyncMessage(message, await readConmonLog(launch.paths.conmonLog));
}

export function conmonArgs(launch: ConmonLaunch): string[] {
  const args = [
    '--api-version', '1',
    '--cid', launch.id,
    '--cuuid', launch.id,
    '--name', launch.id,
    '--runtime', launch.runtime,
    '--bundle', launch.bundlePath,
    '--container-pidfile', launch.paths.containerPidFile,
    '--conmon-pidfile', launch.paths.conmonPidFile,
    '--persist-dir', launch.paths.dir,
    '--exit-dir', launch.exitsDir,
    '--socket-dir-path', launch.paths.socketDir,
    '--log-path', launch.logPath ? `k8s-file:${launch.logPath}` : 'none:',
    '--log-level', 'info',
    '--syslog',
  ];
  // The `=` form keeps glib from reading a value that starts with `--` as an option of its own.
  for (const runtimeArg of launch.runtimeArgs) args.push(`--runtime-arg=${runtimeArg}`);
  if (launch.noPivot) args.push('--no-pivot');
  if (launch.systemdCgroup) args.push('--systemd-cgroup');
  if (launch.tty) args.push('--terminal');
  if (launch.stdin) args.push('--stdin');
  if (launch.stdin && !launch.stdinOnce) args.push('--leave-stdin-open');
  return args;
}

/** Parses conmon's sync message; throws MonitorStartError with the runtime's message on failure. */
export function parseSyncMessage(message: string, conmonLog: string): number {
  const detail = conmonLog.trim() ? ` (conmon output: ${conmonLog.trim()})` : '';
  if (message.trim() === '') {
    throw new MonitorStartError(`conmon exited without reporting the container PID${detail}`);
  }

  let parsed: { data?: unknown; message?: unknown };
  try {
    parsed = JSON.parse(message) as { data?: unknown; message?: unknown };
  } catch {
    throw new MonitorStartError(`conmon sent an unreadable sync message ${JSON.stringify(message)}${detail}`);
  }

  const pid = typeof parsed.data === 'number' ? parsed.data : Number.NaN;
  if (!Number.isInteger(pid) || pid <= 0) {
    const reason = typeof parsed.message === 'string' && parsed.message !== '' ? parsed.message : `status ${String(parsed.data)}`;
    throw new MonitorStartError(reason.trim());
  }
  return pid;
}

async function readConmonLog(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).slice(0, 4096);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return '';
    throw err;
  }
}
