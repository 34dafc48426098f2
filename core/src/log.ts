import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Registry credentials must never reach a log, whatever object a caller passes. These paths are
 * censored by pino before serialisation.
 */
const REDACTED_PATHS = [
  'auth',
  '*.auth',
  'password',
  '*.password',
  'identity_token',
  '*.identity_token',
  'registry_token',
  '*.registry_token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'credentials',
  '*.credentials',
];

/**
 * Creates the daemon's one logger: JSON lines on stderr (or on `destination`), with credentials
 * redacted. Child loggers carry request ids such as `sandbox_id` and `container_id`.
 */
export function createLogger(level: LogLevel | LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { service: 'berth' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    formatters: {
      level: (label: string) => ({ level: label }),
    },
  };
  return pino(options, destination ?? pino.destination({ fd: 2, sync: false }));
}

/**
 * Returns a child of `log` that carries `ids`, leaving out the ids it already carries with the
 * same value. pino writes every binding of every child level, so binding a request's
 * `container_id` again in a service would print the key twice in one JSON line.
 */
export function withIds(log: Logger, ids: Record<string, string>): Logger {
  const bound = log.bindings();
  const added = Object.fromEntries(Object.entries(ids).filter(([key, value]) => bound[key] !== value));
  return Object.keys(added).length === 0 ? log : log.child(added);
}
