import { execa } from 'execa';
import { errorMessage } from '../errors.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A helper program that exited non-zero or could not be started. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    message: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/**
 * Runs `file` with `args` without a shell and returns its output. Throws CommandError naming the
 * command and carrying its stderr when it cannot start or exits non-zero.
 */
export async function runCommand(
  file: string,
  args: string[],
  options: { input?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<CommandResult> {
  const label = `${file} ${args.slice(0, 3).join(' ')}`.trim();
  let result;
  try {
    result = await execa(file, args, {
      reject: false,
      stripFinalNewline: true,
      input: options.input,
      timeout: options.timeoutMs,
      env: options.env,
      extendEnv: true,
    });
  } catch (err) {
    throw new CommandError(label, undefined, '', `${label}: cannot run: ${errorMessage(err)}`);
  }

  if (result.failed) {
    const stderr = String(result.stderr ?? '').trim();
    const reason = result.timedOut
      ? `timed out after ${options.timeoutMs} ms`
      : result.exitCode !== undefined
        ? `exited with code ${result.exitCode}`
        : `failed: ${result.shortMessage}`;
    throw new CommandError(label, result.exitCode, stderr, `${label}: ${reason}${stderr ? `: ${stderr}` : ''}`);
  }
  return { stdout: String(result.stdout), stderr: String(result.stderr), exitCode: result.exitCode ?? 0 };
}
