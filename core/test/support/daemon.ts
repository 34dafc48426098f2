import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'smol-toml';
import { PROJECT_ROOT } from '../../src/paths.js';
import { connectCri, type CriClient } from './cri-client.js';

export const CLI = path.join(PROJECT_ROOT, 'core/dist/src/cli.js');

export interface DaemonOptions {
  /** Main config file contents; written as TOML. `listen`, `root` and `runroot` default to temp paths. */
  config?: Record<string, unknown>;
  /** Drop-in files by name, written as TOML (or JSON for names ending in .json). */
  dropIns?: Record<string, Record<string, unknown>>;
  /** Extra command line arguments. */
  args?: string[];
  /** Reuse the state directory of an earlier daemon (restart tests). */
  dir?: string;
}

/** A berth daemon started as a child process for one test, with its own socket and state. */
export class TestDaemon {
  readonly output: string[] = [];
  private exited?: Promise<number | null>;

  private constructor(
    readonly dir: string,
    readonly socket: string,
    readonly process: ChildProcess,
    readonly client: CriClient,
  ) {}

  /** Starts a daemon and waits until it answers Version; throws with its output if it exits first. */
  static async start(options: DaemonOptions = {}): Promise<TestDaemon> {
    const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'berth-test-')));
    const listen = options.config?.listen;
    const socket = typeof listen === 'string' ? listen : path.join(dir, 'berth.sock');
    const config = {
      listen: socket,
      root: path.join(dir, 'root'),
      runroot: path.join(dir, 'run'),
      log_level: 'debug',
      ...options.config,
    };
    const configFile = path.join(dir, 'berth.toml');
    const dropInDir = path.join(dir, 'berth.d');
    await writeFile(configFile, stringify(config));
    await mkdir(dropInDir, { recursive: true });
    for (const [name, body] of Object.entries(options.dropIns ?? {})) {
      await writeFile(path.join(dropInDir, name), name.endsWith('.json') ? JSON.stringify(body) : stringify(body));
    }

    const child = spawn(process.execPath, [CLI, '--config', configFile, '--config-dir', dropInDir, ...(options.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const daemon = new TestDaemon(dir, socket, child, await connectCri(socket));
    child.stdout?.on('data', (chunk: Buffer) => daemon.output.push(chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => daemon.output.push(chunk.toString()));
    let exitCode: number | null | undefined;
    daemon.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        exitCode = code;
        resolve(code);
      }),
    );

    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exitCode !== undefined) {
        daemon.client.close();
        // A directory this call made is of no use to the caller, who gets only the error.
        if (!options.dir) await rm(dir, { recursive: true, force: true });
        throw new Error(`daemon exited with code ${exitCode} before serving:\n${daemon.output.join('')}`);
      }
      try {
        // Another daemon may already serve this socket, so the child's own log line decides.
        if (!daemon.output.join('').includes('"msg":"CRI server listening"')) throw new Error('not listening yet');
        await daemon.client.runtime.Version({}, { deadlineMs: 1000 });
        return daemon;
      } catch {
        if (Date.now() > deadline) {
          await daemon.kill();
          throw new Error(`daemon did not serve within 60 s:\n${daemon.output.join('')}`);
        }
        await sleep(100);
      }
    }
  }

  /** Waits until a log record matches `predicate` and returns it; throws after `timeoutMs`. */
  async waitForLog(predicate: (record: Record<string, unknown>) => boolean, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = this.logRecords().find(predicate);
      if (record) return record;
      if (Date.now() > deadline) throw new Error(`no matching log record within ${timeoutMs} ms:\n${this.output.join('')}`);
      await sleep(50);
    }
  }

  /** Log lines parsed as JSON; lines that are not JSON are skipped. */
  logRecords(): Record<string, unknown>[] {
    return this.output
      .join('')
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  }

  /** Sends SIGTERM and waits for exit; returns the exit code. */
  async stop(): Promise<number | null> {
    this.client.close();
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGTERM');
    return this.exited ?? null;
  }

  /** Kills the daemon with SIGKILL, as a crash would, leaving its containers and state behind. */
  async kill(): Promise<void> {
    this.client.close();
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
    await this.exited;
  }

  /** Stops the daemon and removes its state directory. */
  async cleanup(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Runs the berth CLI to completion and returns its exit code and output. */
export async function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  return { code, stdout, stderr };
}
