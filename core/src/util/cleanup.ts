import type { Logger } from '../log.js';

/**
 * An undo list for a multi-step operation. Each step that made something pushes the action that
 * releases it; on failure `unwind` runs them in reverse order, so exactly what was made goes away.
 */
export class CleanupStack {
  private readonly actions: { what: string; undo: () => Promise<void> }[] = [];

  constructor(private readonly log: Logger) {}

  /** Registers `undo` to release the resource named by `what` (used in log lines). */
  push(what: string, undo: () => Promise<void>): void {
    this.actions.push({ what, undo });
  }

  /** Forgets every action: the operation succeeded and its resources stay. */
  release(): void {
    this.actions.length = 0;
  }

  /** Runs every action in reverse order; a failing action is logged and the rest still run. */
  async unwind(): Promise<void> {
    while (this.actions.length > 0) {
      const action = this.actions.pop()!;
      try {
        await action.undo();
      } catch (err) {
        this.log.error({ err, resource: action.what }, 'cannot release a resource while undoing a failed operation');
      }
    }
  }
}
