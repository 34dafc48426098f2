import path from 'node:path';
import { InvalidArgumentError } from '@berth/core';
import { ifNameProblem } from './spec.js';

/** The `[plugins.cni]` table after schemas/cni-options.schema.json applied its defaults. */
export interface CniOptions {
  conf_dirs: string[];
  bin_dirs: string[];
  default_network: string;
  interface_name: string;
  loopback: boolean;
  plugin_timeout_seconds: number;
  cache_dir: string;
  reload_interval_seconds: number;
}

export const DEFAULT_OPTIONS: CniOptions = {
  conf_dirs: ['/etc/cni/net.d'],
  bin_dirs: ['/opt/cni/bin', '/usr/lib/cni'],
  default_network: '',
  interface_name: 'eth0',
  loopback: true,
  plugin_timeout_seconds: 60,
  cache_dir: '',
  reload_interval_seconds: 5,
};

/**
 * Fills in defaults for keys the table lacks and checks what the schema cannot. The core has
 * already applied the schema's defaults, so the defaults here serve callers that create the
 * provider directly.
 */
export function resolveOptions(options: Record<string, unknown>): CniOptions {
  const resolved = { ...DEFAULT_OPTIONS, ...options } as CniOptions;

  const problem = ifNameProblem(resolved.interface_name);
  if (problem) {
    throw new InvalidArgumentError(`plugins.cni.interface_name: ${JSON.stringify(resolved.interface_name)} ${problem}`);
  }
  for (const key of ['conf_dirs', 'bin_dirs'] as const) {
    for (const dir of resolved[key]) {
      if (!path.isAbsolute(dir)) throw new InvalidArgumentError(`plugins.cni.${key}: ${JSON.stringify(dir)} must be an absolute path`);
    }
  }
  if (resolved.cache_dir !== '' && !path.isAbsolute(resolved.cache_dir)) {
    throw new InvalidArgumentError(`plugins.cni.cache_dir: ${JSON.stringify(resolved.cache_dir)} must be an absolute path`);
  }
  return resolved;
}
