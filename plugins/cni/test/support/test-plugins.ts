// Source of small CNI plugins written by the tests into their bin directory. Each reads its
// behaviour from keys of its own network config, so one script serves many cases.
import { readFile } from 'node:fs/promises';

/**
 * A plugin that appends each invocation (command, CNI_* environment, stdin config) as a JSON line
 * to `recordFile`, and otherwise passes prevResult through. Config keys:
 * - `failOn`: command that fails with a CNI error document (`errorCode`, `errorMsg`, `errorDetails`),
 *   only while `failFlagFile` exists when that key is set;
 * - `hangOn`: command that starts `sleep 300` (holding stdout), writes both PIDs to `pidFile`
 *   and never exits;
 * - `garbageOn`: command that prints text that is not JSON and exits 0.
 */
export const RECORDER_PLUGIN = `
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const input = fs.readFileSync(0, 'utf8');
const command = process.env.CNI_COMMAND;
if (command === 'VERSION') {
  process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] }));
  process.exit(0);
}
const conf = JSON.parse(input);
const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith('CNI_')));
if (conf.recordFile) fs.appendFileSync(conf.recordFile, JSON.stringify({ command, env, conf }) + '\\n');

if (conf.hangOn === command) {
  const child = spawn('sleep', ['300'], { stdio: ['ignore', 'inherit', 'inherit'] });
  fs.writeFileSync(conf.pidFile, JSON.stringify([process.pid, child.pid]));
  setInterval(() => {}, 1000);
} else if (conf.failOn === command && (!conf.failFlagFile || fs.existsSync(conf.failFlagFile))) {
  process.stdout.write(JSON.stringify({ cniVersion: conf.cniVersion, code: conf.errorCode ?? 107, msg: conf.errorMsg ?? 'recorder failed', details: conf.errorDetails }));
  process.exit(1);
} else if (conf.garbageOn === command) {
  process.stdout.write('this is not JSON');
  process.exit(0);
} else if (command === 'ADD') {
  process.stdout.write(JSON.stringify(conf.prevResult ?? { cniVersion: conf.cniVersion, interfaces: [], ips: [] }));
}
`;

/** Returns the source of a plugin whose VERSION response lists only `versions`. */
export function oldPlugin(versions: string[]): string {
  return `
const fs = require('node:fs');
fs.readFileSync(0, 'utf8');
process.stdout.write(JSON.stringify({ cniVersion: '0.3.1', supportedVersions: ${JSON.stringify(versions)} }));
`;
}

export interface RecordedCall {
  command: string;
  env: Record<string, string>;
  conf: Record<string, unknown>;
}

/** Reads the invocations a recorder plugin appended to `file`. */
export async function readRecords(file: string): Promise<RecordedCall[]> {
  try {
    const text = await readFile(file, 'utf8');
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as RecordedCall);
  } catch {
    return [];
  }
}

/** True while process `pid` exists and is not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
