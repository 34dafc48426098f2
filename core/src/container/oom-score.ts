import { readFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { InvalidArgumentError } from '../errors.js';

/**
 * Clamps requested oom_score_adj values to what the kernel lets this daemon set. Without
 * CAP_SYS_RESOURCE a process may not go below its own value, and runc then fails the whole
 * container ("can't get final child's PID from pipe"). With `restrict` on, a lower request is
 * raised to the daemon's own value and the first such change is logged.
 */
export class OomScoreAdjLimiter {
  private minimum?: Promise<number>;
  private logged = false;

  constructor(
    private readonly restrict: boolean,
    private readonly log: Logger,
  ) {}

  /** Returns the value to put in the spec, or undefined when the request sets none. */
  async clamp(requested: string | undefined): Promise<number | undefined> {
    if (requested === undefined || requested === '') return undefined;
    const value = Number(requested);
    if (!Number.isInteger(value) || value < -1000 || value > 1000) {
      throw new InvalidArgumentError(`linux.resources.oom_score_adj: ${requested} is out of range (-1000 to 1000)`);
    }
    if (!this.restrict) return value;

    this.minimum ??= readFile('/proc/self/oom_score_adj', 'utf8').then((text) => Number.parseInt(text.trim(), 10) || 0);
    const minimum = await this.minimum;
    if (value >= minimum) return value;

    if (!this.logged) {
      this.logged = true;
      this.log.warn(
        { requested: value, applied: minimum },
        'oom_score_adj below the daemon\'s own value is not allowed by the kernel here; raising it (runtime.restrict_oom_score_adj). Later cases are not logged',
      );
    }
    return minimum;
  }
}
