import { readFile, readdir } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { isErrno } from '../errors.js';

/** Rounds of the descendant walk before it gives up on a tree that keeps forking. */
const MAX_WALK_ROUNDS = 50;

/**
 * Kills `root` and every process below it with SIGKILL and returns the PIDs signalled. Each
 * process found is stopped with SIGSTOP first, so that it cannot fork again and its children
 * are not reparented before the walk has seen them. The walk repeats until a round finds no new
 * process. A process that exits by itself during the walk hands its children to the PID
 * namespace's init, and the walk can no longer reach them.
 */
export async function killProcessTree(root: number, log: Logger): Promise<number[]> {
  const found = new Set<number>();
  let pending = [root];
  for (let round = 0; round < MAX_WALK_ROUNDS && pending.length > 0; round++) {
    for (const pid of pending) {
      found.add(pid);
      signal(pid, 'SIGSTOP', log);
    }
    // Children of stopped processes no longer change, except for forks that were under way.
    const next: number[] = [];
    for (const pid of found) {
      for (const child of await childrenOf(pid)) if (!found.has(child) && !next.includes(child)) next.push(child);
    }
    pending = next;
  }
  if (pending.length > 0) {
    log.warn({ root_pid: root, processes: found.size }, 'process tree still forking after the walk; killing what was found');
    for (const pid of pending) found.add(pid);
  }

  for (const pid of found) signal(pid, 'SIGKILL', log);
  return [...found];
}

function signal(pid: number, name: NodeJS.Signals, log: Logger): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    // ESRCH: the process has already exited.
    if (!isErrno(err, 'ESRCH')) log.warn({ pid, signal: name, err }, 'failed to signal process');
  }
}

let childrenFileMissing = false;

/** PIDs whose parent is `pid`, from /proc/<pid>/task/<tid>/children or a scan of /proc. */
async function childrenOf(pid: number): Promise<number[]> {
  if (childrenFileMissing) return (await parentMap()).get(pid) ?? [];

  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return [];
    throw err;
  }

  const children: number[] = [];
  for (const task of tasks) {
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8');
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ESRCH')) throw err;
      // A kernel built without CONFIG_PROC_CHILDREN has no children file in a live task.
      if (await exists(`/proc/${pid}/task/${task}/stat`)) {
        childrenFileMissing = true;
        return (await parentMap()).get(pid) ?? [];
      }
      continue;
    }
    for (const word of text.split(/\s+/)) if (word !== '') children.push(Number(word));
  }
  return children;
}

/** Children of every process, by parent PID, read from /proc/<pid>/stat. */
async function parentMap(): Promise<Map<number, number[]>> {
  const parents = new Map<number, number[]>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // The process exited while /proc was read.
    }
    // The command name in brackets may contain spaces and brackets, so fields count from the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const siblings = parents.get(ppid) ?? [];
    siblings.push(Number(entry));
    parents.set(ppid, siblings);
  }
  return parents;
}

async function exists(file: string): Promise<boolean> {
  try {
    await readFile(file);
    return true;
  } catch {
    return false;
  }
}
