// Kubernetes resource quantities ("10M", "1Gi", "500k", "1.5e6"), as the bandwidth annotations use
// them. Format: a signed decimal number, then an optional binary suffix (Ki, Mi, Gi, Ti, Pi, Ei),
// decimal suffix (m, k, M, G, T, P, E) or exponent (e6, E6).

const BINARY_SUFFIXES: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL_SUFFIXES: Record<string, number> = { '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

const QUANTITY_PATTERN = /^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?\d+)?$/;

/** Parses a quantity into a number; returns undefined when `text` is not one. */
export function parseQuantity(text: string): number | undefined {
  const match = QUANTITY_PATTERN.exec(text.trim());
  if (!match) return undefined;

  const value = Number(match[1]);
  const suffix = match[2] ?? '';
  if (suffix in BINARY_SUFFIXES) return value * BINARY_SUFFIXES[suffix]!;
  if (suffix in DECIMAL_SUFFIXES) return value * DECIMAL_SUFFIXES[suffix]!;
  return value * 10 ** Number(suffix.slice(1));
}
