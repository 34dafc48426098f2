import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import type { Ajv2020, ValidateFunction } from 'ajv/dist/2020.js';
import { createAjv, loadSchemaDir, validationIssues, type SchemaIssue } from '../schema/validator.js';
import { DEFAULT_CONFIG_DIR, DEFAULT_CONFIG_FILE, SCHEMAS_DIR } from '../paths.js';
import { errorMessage, isErrno, StartupError } from '../errors.js';
import { pathExists } from '../util/fs.js';
import type { BerthConfig } from './types.js';

const CONFIG_SCHEMA_ID = 'https://berth.dev/schemas/config.schema.json';

/** A configuration that cannot be used; the message lists every problem with its file and key. */
export class ConfigError extends StartupError {}

/** Values given on the command line; each replaces the key of the same meaning in the files. */
export interface ConfigOverrides {
  listen?: string;
  root?: string;
  runroot?: string;
  log_level?: string;
  default_runtime?: string;
  plugin_dirs?: string[];
}

export interface LoadConfigOptions {
  /** Main file; when undefined the default path is read if it exists. */
  file?: string;
  /** Drop-in directory; when undefined the default directory is read if it exists. */
  dir?: string;
  overrides?: ConfigOverrides;
}

export interface LoadedConfig {
  config: BerthConfig;
  /** Files read, in merge order. */
  files: string[];
}

/** Validators compiled once per process: one that checks a single file, one that applies defaults. */
export class ConfigSchema {
  private constructor(
    readonly checkFile: ValidateFunction,
    readonly checkEffective: ValidateFunction,
    readonly schema: Record<string, unknown>,
  ) {}

  static async load(schemasDir = SCHEMAS_DIR): Promise<ConfigSchema> {
    const strictAjv = await withSchemas(createAjv({ useDefaults: false }), schemasDir);
    const defaultingAjv = await withSchemas(createAjv({ useDefaults: true }), schemasDir);
    const checkFile = strictAjv.getSchema(CONFIG_SCHEMA_ID);
    const checkEffective = defaultingAjv.getSchema(CONFIG_SCHEMA_ID);
    if (!checkFile || !checkEffective) throw new Error(`config schema ${CONFIG_SCHEMA_ID} not found in ${schemasDir}`);
    return new ConfigSchema(checkFile, checkEffective, checkFile.schema as Record<string, unknown>);
  }
}

async function withSchemas(ajv: Ajv2020, dir: string): Promise<Ajv2020> {
  await loadSchemaDir(ajv, dir);
  return ajv;
}

/** Reads one TOML or JSON config file and validates it on its own against the config schema. */
export async function readConfigFile(file: string, schema: ConfigSchema): Promise<Record<string, unknown>> {
  const data = await parseConfigFile(file);
  const issues = validationIssues(schema.checkFile, data);
  if (issues.length > 0) throw new ConfigError(formatIssues(file, issues));
  return data;
}

/**
 * Builds the effective configuration: embedded defaults, then the main file, then each drop-in in
 * lexical order, then command line overrides. Tables merge key by key; arrays and scalars replace.
 */
export async function loadConfig(options: LoadConfigOptions = {}, schema?: ConfigSchema): Promise<LoadedConfig> {
  const configSchema = schema ?? (await ConfigSchema.load());
  const files: string[] = [];
  let merged: Record<string, unknown> = {};

  const mainFile = options.file ?? DEFAULT_CONFIG_FILE;
  if (options.file !== undefined || (await pathExists(mainFile))) {
    merged = deepMerge(merged, await readConfigFile(mainFile, configSchema));
    files.push(mainFile);
  }

  const dropInDir = options.dir ?? DEFAULT_CONFIG_DIR;
  for (const file of await listDropIns(dropInDir, options.dir !== undefined)) {
    merged = deepMerge(merged, await readConfigFile(file, configSchema));
    files.push(file);
  }

  merged = applyOverrides(merged, options.overrides ?? {});
  return { config: finishConfig(merged, configSchema, '(command line)'), files };
}

/**
 * Applies defaults to a merged document and runs the checks that span keys. `source` names where
 * the data came from in error messages.
 */
export function finishConfig(merged: Record<string, unknown>, schema: ConfigSchema, source: string): BerthConfig {
  const effective = structuredClone(merged);
  const issues = validationIssues(schema.checkEffective, effective);
  if (issues.length > 0) throw new ConfigError(formatIssues(source, issues));

  const config = effective as unknown as BerthConfig;
  if (!(config.default_runtime in config.runtimes)) {
    const handlers = Object.keys(config.runtimes).sort().join(', ') || 'none';
    throw new ConfigError(
      `${source}: default_runtime: runtime handler "${config.default_runtime}" is not configured (configured: ${handlers}); add a [runtimes.${config.default_runtime}] table or pick one of those`,
    );
  }
  return config;
}

/** Returns the embedded defaults alone, as used when no file exists. */
export function defaultConfig(schema: ConfigSchema): BerthConfig {
  return finishConfig({}, schema, '(defaults)');
}

export function formatIssues(source: string, issues: SchemaIssue[]): string {
  const lines = issues.map((issue) => `  ${source}: ${issue.keyPath} (${issue.pointer || '/'}): ${issue.message}`);
  return `invalid configuration:\n${lines.join('\n')}`;
}

async function parseConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read config file: ${errorMessage(err)}`);
  }

  const extension = path.extname(file).toLowerCase();
  if (extension !== '.toml' && extension !== '.json') {
    throw new ConfigError(`${file}: unsupported config file extension "${extension}"; name the file *.toml or *.json`);
  }
  try {
    const data: unknown = extension === '.json' ? JSON.parse(text) : parseToml(text);
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new Error('the document must be a table (object) at the top level');
    }
    return data as Record<string, unknown>;
  } catch (err) {
    const format = extension === '.json' ? 'JSON' : 'TOML';
    throw new ConfigError(`${file}: invalid ${format}: ${errorMessage(err)}`);
  }
}

async function listDropIns(dir: string, explicit: boolean): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') && !explicit) return [];
    throw new ConfigError(`${dir}: cannot read config drop-in directory: ${errorMessage(err)}`);
  }
  return names
    .filter((name) => /\.(toml|json)$/i.test(name))
    .sort()
    .map((name) => path.join(dir, name));
}

function applyOverrides(merged: Record<string, unknown>, overrides: ConfigOverrides): Record<string, unknown> {
  const result = { ...merged };
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) result[key] = value;
  }
  return result;
}

/** Merges `overlay` into `base`: plain objects recursively, everything else replaced. */
export function deepMerge(base: Record<string, unknown>, overlay: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(overlay)) {
    const current = result[key];
    result[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return result;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}
