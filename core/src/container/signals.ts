import os from 'node:os';

/**
 * First and last real-time signal as glibc programs and runc/crun number them. The kernel's
 * range starts at 32, but glibc keeps 32 and 33 for its threading library, so names such as
 * `SIGRTMIN+3` count from 34.
 */
export const SIGRTMIN = 34;
export const SIGRTMAX = 64;

export const SIGTERM = 15;
export const SIGKILL = 9;

/** Names the CRI Signal enum uses that `os.constants.signals` lacks. */
const ALIASES: Record<string, number> = { SIGCLD: 17 };

/** Preferred name of each standard signal number, for the CRI Signal enum. */
const CANONICAL_NAMES = new Map<number, string>([
  [6, 'SIGABRT'],
  [17, 'SIGCHLD'],
  [29, 'SIGIO'],
]);

/**
 * Parses a stop signal as images and CRI requests write it: a name with or without the `SIG`
 * prefix in any case (`SIGTERM`, `term`), a number (`15`), a real-time offset (`SIGRTMIN+3`,
 * `RTMAX-2`) or a CRI enum name (`SIGRTMINPLUS3`, `SIGRTMAXMINUS2`). Returns the Linux signal
 * number, or undefined when the text names no signal. 0 and the glibc-reserved 32 and 33 are
 * not signals a stop can use.
 */
export function parseSignal(text: string): number | undefined {
  const value = text.trim().toUpperCase();
  if (value === '') return undefined;

  if (/^\d+$/.test(value)) {
    const number = Number.parseInt(value, 10);
    return isUsableSignal(number) ? number : undefined;
  }

  const name = value.startsWith('SIG') ? value : `SIG${value}`;
  const realTime = /^SIGRT(MIN|MAX)(?:(\+|-|PLUS|MINUS)(\d+))?$/.exec(name);
  if (realTime) return parseRealTime(realTime[1]!, realTime[2], realTime[3]);

  const standard = (os.constants.signals as Record<string, number | undefined>)[name] ?? ALIASES[name];
  return standard !== undefined && isUsableSignal(standard) ? standard : undefined;
}

/**
 * Returns the CRI Signal enum name of a signal number (`SIGTERM`, `SIGRTMINPLUS3`), or
 * undefined for a number the enum does not list.
 */
export function criSignalName(signal: number): string | undefined {
  if (signal >= SIGRTMIN && signal <= SIGRTMAX) {
    if (signal === SIGRTMIN) return 'SIGRTMIN';
    if (signal === SIGRTMAX) return 'SIGRTMAX';
    // The enum counts up from SIGRTMIN to +15 and names the rest down from SIGRTMAX.
    return signal - SIGRTMIN <= 15 ? `SIGRTMINPLUS${signal - SIGRTMIN}` : `SIGRTMAXMINUS${SIGRTMAX - signal}`;
  }

  const canonical = CANONICAL_NAMES.get(signal);
  if (canonical) return canonical;
  return Object.entries(os.constants.signals).find(([, number]) => number === signal)?.[0];
}

/**
 * Returns the signal number of a record's `stopSignal`: the number itself, or the number of a
 * name stored by an older build. Returns undefined when a stored name is not a signal.
 */
export function storedStopSignal(stored: number | string): number | undefined {
  if (typeof stored === 'number') return isUsableSignal(stored) ? stored : undefined;
  return parseSignal(stored);
}

function parseRealTime(base: string, sign: string | undefined, offsetText: string | undefined): number | undefined {
  const down = sign === '-' || sign === 'MINUS';
  // SIGRTMIN counts only up and SIGRTMAX only down.
  if (sign !== undefined && down !== (base === 'MAX')) return undefined;

  const offset = offsetText === undefined ? 0 : Number.parseInt(offsetText, 10);
  const number = base === 'MIN' ? SIGRTMIN + offset : SIGRTMAX - offset;
  return number >= SIGRTMIN && number <= SIGRTMAX ? number : undefined;
}

function isUsableSignal(number: number): boolean {
  return Number.isInteger(number) && ((number >= 1 && number <= 31) || (number >= SIGRTMIN && number <= SIGRTMAX));
}
