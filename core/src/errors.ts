/**
 * Typed domain errors. Services throw these; the CRI layer maps each kind to one gRPC status code
 * in `cri/status.ts`, so a handler never picks a code by hand.
 */
export type ErrorKind =
  | 'InvalidArgument'
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'Unimplemented'
  | 'Unavailable'
  | 'DeadlineExceeded'
  | 'ResourceExhausted'
  | 'PermissionDenied'
  | 'Internal';

export class BerthError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = `${kind}Error`;
  }
}

export class InvalidArgumentError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('InvalidArgument', message, options);
  }
}

export class NotFoundError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('NotFound', message, options);
  }
}

export class AlreadyExistsError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('AlreadyExists', message, options);
  }
}

export class FailedPreconditionError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('FailedPrecondition', message, options);
  }
}

export class UnimplementedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Unimplemented', message, options);
  }
}

export class UnavailableError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Unavailable', message, options);
  }
}

export class DeadlineExceededError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DeadlineExceeded', message, options);
  }
}

export class ResourceExhaustedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ResourceExhausted', message, options);
  }
}

export class PermissionDeniedError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PermissionDenied', message, options);
  }
}

export class InternalError extends BerthError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('Internal', message, options);
  }
}

/**
 * A reason the daemon cannot start that an admin fixes (bad config, plugin, busy socket or state
 * directory). The command line prints its message without a stack trace.
 */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Returns the message of any thrown value, for wrapping in a message with more context. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Returns true when `err` is a Node system error with the given code (ENOENT, EEXIST, ...). */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
