import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import type { ValidateFunction } from 'ajv/dist/2020.js';
import type { Logger } from '../log.js';
import { errorMessage, isErrno, StartupError } from '../errors.js';
import { createAjv, loadSchemaDir, validationIssues } from '../schema/validator.js';
import { SCHEMAS_DIR } from '../paths.js';
import { CORE_API_VERSION, MANIFEST_FILE, type ManifestProvision, type PluginManifest, type ProvisionKind } from './manifest.js';

const MANIFEST_SCHEMA_ID = 'https://berth.dev/schemas/plugin-manifest.schema.json';

/** A plugin that cannot be loaded; start-up stops with this message. */
export class PluginError extends StartupError {}

/** One implementation provided by a loaded plugin: its factory and its options validator. */
export class Provision {
  constructor(
    readonly kind: ProvisionKind,
    readonly name: string,
    readonly pluginName: string,
    readonly pluginVersion: string,
    readonly manifestPath: string,
    readonly factory: { create: (...args: never[]) => Promise<unknown> },
    private readonly validateOptions: ValidateFunction | undefined,
    private readonly optionsSchemaPath: string | undefined,
  ) {}

  /**
   * Validates `options` against the plugin's options schema and returns a copy with the schema's
   * defaults applied. `where` names the config key the options came from.
   */
  checkOptions(options: Record<string, unknown>, where: string): Record<string, unknown> {
    const copy = structuredClone(options);
    if (!this.validateOptions) {
      if (Object.keys(copy).length > 0) {
        throw new PluginError(
          `plugin "${this.pluginName}" (${this.manifestPath}): ${where}: ${this.kind} "${this.name}" takes no options, but ${Object.keys(copy).join(', ')} given`,
        );
      }
      return copy;
    }

    const issues = validationIssues(this.validateOptions, copy);
    if (issues.length > 0) {
      const base = `/${where.split('.').join('/')}`;
      const lines = issues.map((issue) =>
        issue.pointer === ''
          ? `  ${where} (${base}): ${issue.message}`
          : `  ${where}.${issue.keyPath} (${base}${issue.pointer}): ${issue.message}`,
      );
      throw new PluginError(
        `plugin "${this.pluginName}" (${this.manifestPath}): invalid options for ${this.kind} "${this.name}", schema ${this.optionsSchemaPath}:\n${lines.join('\n')}`,
      );
    }
    return copy;
  }
}

export interface LoadedPlugin {
  manifest: PluginManifest;
  dir: string;
  manifestPath: string;
  builtin: boolean;
}

/** Every plugin loaded at start-up and the implementations they provide, by kind and name. */
export class PluginRegistry {
  readonly plugins: LoadedPlugin[] = [];
  private readonly provisions = new Map<string, Provision>();

  get(kind: ProvisionKind, name: string): Provision | undefined {
    return this.provisions.get(`${kind}/${name}`);
  }

  /**
   * Returns the provision of `kind` named `name`, or throws a PluginError that names the config
   * key `key` and lists what is available.
   */
  require(kind: ProvisionKind, name: string, key: string): Provision {
    const provision = this.get(kind, name);
    if (provision) return provision;
    const known = this.names(kind).join(', ') || 'none';
    throw new PluginError(
      `${key}: no plugin provides ${kind} "${name}" (available: ${known}); install the plugin or list its directory in plugin_dirs`,
    );
  }

  names(kind: ProvisionKind): string[] {
    return [...this.provisions.values()].filter((p) => p.kind === kind).map((p) => p.name).sort();
  }

  add(provision: Provision): void {
    const key = `${provision.kind}/${provision.name}`;
    const existing = this.provisions.get(key);
    if (existing) {
      throw new PluginError(
        `plugin "${provision.pluginName}" (${provision.manifestPath}): ${provision.kind} "${provision.name}" is already provided by plugin "${existing.pluginName}" (${existing.manifestPath})`,
      );
    }
    this.provisions.set(key, provision);
  }
}

export interface PluginSource {
  dir: string;
  builtin: boolean;
}

/**
 * Discovers, validates and imports plugins. Each source is either a plugin directory (it holds
 * berth-plugin.json) or a directory of plugin directories. Any invalid plugin stops loading with a
 * PluginError naming the plugin, the file, the JSON pointer and the reason.
 */
export async function loadPlugins(sources: PluginSource[], log: Logger): Promise<PluginRegistry> {
  const ajv = createAjv({ useDefaults: true });
  await loadSchemaDir(ajv, SCHEMAS_DIR);
  const validateManifest = ajv.getSchema(MANIFEST_SCHEMA_ID);
  if (!validateManifest) throw new PluginError(`plugin manifest schema ${MANIFEST_SCHEMA_ID} not found in ${SCHEMAS_DIR}`);

  const registry = new PluginRegistry();
  for (const source of sources) {
    for (const dir of await pluginDirs(source.dir)) {
      const plugin = await readManifest(dir, validateManifest, source.builtin);
      const clash = registry.plugins.find((loaded) => loaded.manifest.name === plugin.manifest.name);
      if (clash) {
        throw new PluginError(
          `plugin "${plugin.manifest.name}" (${plugin.manifestPath}): name already used by ${clash.manifestPath}; rename one of them`,
        );
      }

      for (const provision of plugin.manifest.provides) {
        registry.add(await importProvision(plugin, provision));
      }
      registry.plugins.push(plugin);
      log.info(
        {
          plugin: plugin.manifest.name,
          version: plugin.manifest.version,
          dir,
          builtin: plugin.builtin,
          provides: plugin.manifest.provides.map((p) => `${p.kind}/${p.name}`),
        },
        'plugin loaded',
      );
    }
  }
  return registry;
}

async function pluginDirs(dir: string): Promise<string[]> {
  const resolved = path.resolve(dir);
  if (await isFile(path.join(resolved, MANIFEST_FILE))) return [resolved];

  let entries;
  try {
    entries = await readdir(resolved, { withFileTypes: true });
  } catch (err) {
    throw new PluginError(`plugin directory ${resolved}: cannot read: ${errorMessage(err)}`);
  }

  const dirs: string[] = [];
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.isDirectory()) continue;
    const candidate = path.join(resolved, entry.name);
    if (await isFile(path.join(candidate, MANIFEST_FILE))) dirs.push(candidate);
  }
  return dirs;
}

async function readManifest(dir: string, validate: ValidateFunction, builtin: boolean): Promise<LoadedPlugin> {
  const manifestPath = path.join(dir, MANIFEST_FILE);
  const label = `plugin at ${dir} (${manifestPath})`;

  let data: unknown;
  try {
    data = JSON.parse(await readFile(manifestPath, 'utf8'));
  } catch (err) {
    throw new PluginError(`${label}: cannot parse manifest: ${errorMessage(err)}`);
  }

  const name = typeof data === 'object' && data !== null && typeof (data as { name?: unknown }).name === 'string'
    ? (data as { name: string }).name
    : undefined;
  const named = name ? `plugin "${name}" (${manifestPath})` : label;

  const issues = validationIssues(validate, data);
  if (issues.length > 0) {
    const lines = issues.map((issue) => `  ${issue.pointer || '/'}: ${issue.message}`);
    throw new PluginError(`${named}: invalid manifest:\n${lines.join('\n')}`);
  }

  const manifest = data as PluginManifest;
  const range = semver.validRange(manifest.coreApi);
  if (!range) {
    throw new PluginError(`${named}: /coreApi: "${manifest.coreApi}" is not a semver range (example: "^1.0.0")`);
  }
  if (!semver.satisfies(CORE_API_VERSION, range)) {
    throw new PluginError(
      `${named}: /coreApi: plugin requires core API ${manifest.coreApi}, but this berth provides ${CORE_API_VERSION}; install a plugin version built for core API ${semver.major(CORE_API_VERSION)}.x`,
    );
  }

  return { manifest, dir, manifestPath, builtin };
}

async function importProvision(plugin: LoadedPlugin, provision: ManifestProvision): Promise<Provision> {
  const index = plugin.manifest.provides.indexOf(provision);
  const named = `plugin "${plugin.manifest.name}" (${plugin.manifestPath})`;

  const entryPath = path.resolve(plugin.dir, provision.entry);
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(entryPath).href)) as Record<string, unknown>;
  } catch (err) {
    throw new PluginError(`${named}: /provides/${index}/entry: cannot import ${entryPath}: ${errorMessage(err)}`);
  }

  const factory = module.default as { create?: unknown } | undefined;
  if (typeof factory !== 'object' || factory === null || typeof factory.create !== 'function') {
    throw new PluginError(
      `${named}: /provides/${index}/entry: ${entryPath} must export by default an object with a create(options, context) function`,
    );
  }

  let validateOptions: ValidateFunction | undefined;
  let schemaPath: string | undefined;
  if (provision.optionsSchema) {
    schemaPath = path.resolve(plugin.dir, provision.optionsSchema);
    try {
      const schema = JSON.parse(await readFile(schemaPath, 'utf8')) as Record<string, unknown>;
      // A fresh Ajv per schema, so that two plugins may reuse one $id without clashing.
      validateOptions = createAjv({ useDefaults: true }).compile(schema);
    } catch (err) {
      throw new PluginError(`${named}: /provides/${index}/optionsSchema: cannot load ${schemaPath}: ${errorMessage(err)}`);
    }
  }

  return new Provision(
    provision.kind,
    provision.name,
    plugin.manifest.name,
    plugin.manifest.version,
    plugin.manifestPath,
    factory as Provision['factory'],
    validateOptions,
    schemaPath,
  );
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}
