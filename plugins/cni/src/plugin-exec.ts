import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { DeadlineExceededError, InternalError, errorMessage, type Logger } from '@berth/core';
import { CniPluginError, PluginNotFoundError, describeSite, type InvocationSite } from './errors.js';
import type { CniCommand, CniErrorDocument } from './spec.js';

/** PATH for plugins when the daemon has none: bridge and portmap run iptables and ip. */
const FALLBACK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface InvokeRequest {
  command: CniCommand;
  /** Plugin type: the binary's file name. */
  plugin: string;
  network: string;
  /** Document written to the plugin's stdin. */
  config: Record<string, unknown>;
  containerId?: string;
  /** Namespace path; empty when it no longer exists (allowed for DEL). */
  netns?: string;
  ifName?: string;
  /** CNI_ARGS value: `KEY=VALUE` pairs joined by `;`. */
  args?: string;
  log: Logger;
}

export interface InvokeOutcome {
  /** stdout parsed as JSON; undefined when the plugin printed nothing. */
  output: unknown;
  durationMs: number;
}

/** Runs CNI plugin binaries found in the configured directories, one process per invocation. */
export class PluginInvoker {
  constructor(
    readonly binDirs: string[],
    readonly timeoutMs: number,
  ) {}

  /**
   * Returns the path of the executable for plugin `type`, searching the bin directories in order;
   * undefined when none has it.
   */
  async find(type: string): Promise<string | undefined> {
    for (const dir of this.binDirs) {
      const candidate = path.join(dir, type);
      try {
        const info = await stat(candidate);
        if (!info.isFile()) continue;
        await access(candidate, constants.X_OK);
        return candidate;
      } catch {
        // Missing or not executable here: the next directory may have it.
      }
    }
    return undefined;
  }

  /**
   * Runs one plugin with `config` on stdin and the CNI environment. Resolves with its parsed
   * stdout on exit code 0. Rejects with CniPluginError carrying the plugin's error document on any
   * other exit, DeadlineExceededError after killing a plugin that ran past the timeout, and
   * PluginNotFoundError when the binary is not installed.
   */
  async invoke(request: InvokeRequest): Promise<InvokeOutcome> {
    const site: InvocationSite = {
      command: request.command,
      plugin: request.plugin,
      network: request.network,
      containerId: request.containerId,
    };

    const binary = await this.find(request.plugin);
    if (!binary) throw new PluginNotFoundError(site, this.binDirs);

    const started = performance.now();
    // Detached, so the plugin leads its own process group and a timeout kills its children too.
    // A child left holding the stdout pipe would otherwise keep the call waiting.
    const subprocess = execa(binary, [], {
      input: JSON.stringify(request.config),
      env: this.environment(request),
      extendEnv: false,
      detached: true,
      cleanup: false,
      reject: false,
      stripFinalNewline: false,
    });

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(subprocess.pid, request.log);
    }, this.timeoutMs);

    const result = await subprocess.finally(() => clearTimeout(timer));
    const durationMs = performance.now() - started;
    const stdout = String(result.stdout ?? '');
    const stderr = String(result.stderr ?? '');
    request.log.debug(
      { cni_command: request.command, plugin: request.plugin, network: request.network, exit_code: result.exitCode, duration_ms: round(durationMs), stderr: stderr.trim() || undefined },
      'CNI plugin finished',
    );

    if (timedOut) {
      throw new DeadlineExceededError(
        `${describeSite(site)} timed out after ${this.timeoutMs / 1000} s and was killed; raise plugins.cni.plugin_timeout_seconds if the plugin is slow but working`,
      );
    }

    if (result.exitCode !== 0 || result.failed) {
      if (result.exitCode === undefined && result.signal === undefined) {
        throw new InternalError(`${describeSite(site)}: cannot run ${binary}: ${result.shortMessage ?? result.message}`);
      }
      throw new CniPluginError(site, {
        document: parseErrorDocument(stdout),
        exitCode: result.exitCode,
        stderr: result.signal ? `${stderr.trim()} (killed by ${result.signal})`.trim() : stderr,
        output: stdout,
      });
    }

    if (stdout.trim() === '') return { output: undefined, durationMs };
    try {
      return { output: JSON.parse(stdout) as unknown, durationMs };
    } catch (err) {
      throw new CniPluginError(site, {
        exitCode: 0,
        stderr,
        output: `printed output that is not JSON (${errorMessage(err)}): ${truncate(stdout.trim(), 200)}`,
      });
    }
  }

  private environment(request: InvokeRequest): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (value !== undefined && !key.startsWith('CNI_')) env[key] = value;
    }
    env.PATH = env.PATH || FALLBACK_PATH;

    env.CNI_COMMAND = request.command;
    env.CNI_PATH = this.binDirs.join(path.delimiter);
    if (request.command === 'VERSION') return env;

    env.CNI_CONTAINERID = request.containerId ?? '';
    env.CNI_NETNS = request.netns ?? '';
    env.CNI_IFNAME = request.ifName ?? '';
    env.CNI_ARGS = request.args ?? '';
    return env;
  }
}

/** Reads the CNI error document in a failed plugin's stdout; returns undefined when there is none. */
export function parseErrorDocument(stdout: string): CniErrorDocument | undefined {
  const text = stdout.trim();
  if (!text.startsWith('{')) return undefined;

  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;

  const document = parsed as Record<string, unknown>;
  if (typeof document.code !== 'number' || typeof document.msg !== 'string') return undefined;
  return {
    code: document.code,
    msg: document.msg,
    details: typeof document.details === 'string' && document.details !== '' ? document.details : undefined,
    cniVersion: typeof document.cniVersion === 'string' ? document.cniVersion : undefined,
  };
}

function killGroup(pid: number | undefined, log: Logger): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (err) {
    log.warn({ err, pid }, 'cannot kill the process group of a timed-out CNI plugin');
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

function truncate(text: string, length: number): string {
  return text.length > length ? `${text.slice(0, length)}…` : text;
}
