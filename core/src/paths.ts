import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Top of the berth checkout or package tree; this file is compiled to core/dist/src/paths.js. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export const SCHEMAS_DIR = path.join(PROJECT_ROOT, 'schemas');

/** Built-in plugins: each subdirectory holding a berth-plugin.json. */
export const BUILTIN_PLUGINS_DIR = path.join(PROJECT_ROOT, 'plugins');

export const DEFAULT_CONFIG_FILE = '/etc/berth/berth.toml';
export const DEFAULT_CONFIG_DIR = '/etc/berth/berth.d';

/** The core package directory, holding `proto/api.proto`. */
export const CORE_DIR = path.join(PROJECT_ROOT, 'core');
