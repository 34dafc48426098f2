/** Waiters and holders of one key's lock. */
interface LockState {
  readers: number;
  writer: boolean;
  queue: { exclusive: boolean; grant: () => void }[];
}

/**
 * A readers-writer lock per key: any number of shared holders, or one exclusive holder. Keys
 * are independent. Waiters are granted in arrival order, so a shared request that arrives
 * while an exclusive one waits queues behind it and writers do not starve. Not reentrant: an
 * operation that holds a key must not request it again.
 */
export class KeyedRwLock {
  private readonly states = new Map<string, LockState>();

  /** Runs `operation` while holding `key` shared. */
  shared<T>(key: string, operation: () => Promise<T>): Promise<T> {
    return this.run(key, false, operation);
  }

  /** Runs `operation` while holding `key` exclusively. */
  exclusive<T>(key: string, operation: () => Promise<T>): Promise<T> {
    return this.run(key, true, operation);
  }

  private async run<T>(key: string, exclusive: boolean, operation: () => Promise<T>): Promise<T> {
    await this.acquire(key, exclusive);
    try {
      return await operation();
    } finally {
      this.release(key, exclusive);
    }
  }

  private acquire(key: string, exclusive: boolean): Promise<void> {
    let state = this.states.get(key);
    if (!state) {
      state = { readers: 0, writer: false, queue: [] };
      this.states.set(key, state);
    }
    return new Promise<void>((grant) => {
      state.queue.push({ exclusive, grant });
      this.grantWaiters(state);
    });
  }

  private release(key: string, exclusive: boolean): void {
    const state = this.states.get(key)!;
    if (exclusive) state.writer = false;
    else state.readers--;
    this.grantWaiters(state);
    if (!state.writer && state.readers === 0 && state.queue.length === 0) this.states.delete(key);
  }

  /** Grants waiters from the front of the queue for as long as they are compatible with the holders. */
  private grantWaiters(state: LockState): void {
    while (state.queue.length > 0 && !state.writer) {
      const next = state.queue[0]!;
      if (next.exclusive) {
        if (state.readers > 0) return;
        state.writer = true;
      } else {
        state.readers++;
      }
      state.queue.shift();
      next.grant();
    }
  }
}
