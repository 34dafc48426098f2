import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { errorMessage, FailedPreconditionError, InvalidArgumentError, isErrno } from '../errors.js';
import { DOCKER_HUB, formatReference, parseReference, qualifyReference, repositoryName, type ImageReference } from './reference.js';

/** Which pulls may use a mirror, as the `pull-from-mirror` key of registries.conf sets it. */
export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';

export interface MirrorEntry {
  location: string;
  insecure: boolean;
  pullFromMirror: PullFromMirror;
}

/** One `[[registry]]` table after merging. */
export interface RegistryEntry {
  /** Names this entry applies to: a name prefix (`docker.io/library`) or a host wildcard (`*.example.com`). */
  prefix: string;
  /** Where the names are pulled from; the matched prefix is replaced by it. Empty means the name itself. */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: MirrorEntry[];
  mirrorByDigestOnly: boolean;
  /** File that defined the entry, for error messages. */
  source: string;
}

/** The registries configuration: main file and drop-ins merged in order. */
export interface RegistriesConfig {
  searchRegistries: string[];
  /** Short name (without tag or digest) to fully qualified name. */
  aliases: Map<string, string>;
  registries: RegistryEntry[];
  /** Files read, in merge order. */
  files: string[];
}

/** One place to pull a repository from: a mirror or the primary location. */
export interface PullEndpoint {
  /** Registry host with optional port, e.g. `127.0.0.1:5000`. */
  host: string;
  /** Repository path on that host. */
  path: string;
  /** Plain HTTP and unverified TLS are allowed. */
  insecure: boolean;
  mirror: boolean;
}

/** A fully qualified name to try for a pull, with the endpoints that serve it in the order to try. */
export interface PullCandidate {
  reference: ImageReference;
  endpoints: PullEndpoint[];
}

/** The configuration used when no registries.conf exists: Docker Hub is the only search registry. */
export function defaultRegistriesConfig(): RegistriesConfig {
  return { searchRegistries: [DOCKER_HUB], aliases: new Map(), registries: [], files: [] };
}

/**
 * Reads a registries.conf v2 file and the `*.conf` drop-ins of `dropInDir` in lexical order.
 * A later file replaces `unqualified-search-registries` when it sets the key, replaces a
 * `[[registry]]` entry of the same prefix, and adds or replaces aliases one by one. A missing main
 * file or directory counts as empty; when no file exists at all the defaults apply.
 */
export async function loadRegistriesConfig(mainFile: string, dropInDir: string): Promise<RegistriesConfig> {
  const files: string[] = [];
  if (mainFile !== '' && (await readText(mainFile)) !== undefined) files.push(mainFile);
  if (dropInDir !== '') files.push(...(await listDropIns(dropInDir)));
  if (files.length === 0) return defaultRegistriesConfig();

  const config: RegistriesConfig = { searchRegistries: [], aliases: new Map(), registries: [], files };
  for (const file of files) {
    const text = await readText(file);
    if (text === undefined) continue;
    mergeRegistriesFile(config, parseRegistriesFile(text, file));
  }
  return config;
}

interface RegistriesFile {
  searchRegistries?: string[];
  aliases: Map<string, string>;
  registries: RegistryEntry[];
}

/** Parses and checks one registries.conf document; errors name the file and the key. */
export function parseRegistriesFile(text: string, file: string): RegistriesFile {
  let data: Record<string, unknown>;
  try {
    data = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new InvalidArgumentError(`${file}: invalid TOML: ${errorMessage(err)}`);
  }

  if ('registries' in data && !Array.isArray(data.registries)) {
    throw new InvalidArgumentError(
      `${file}: the version 1 format ([registries.search], [registries.insecure], [registries.block]) is not supported; rewrite it in the version 2 format with unqualified-search-registries and [[registry]] tables`,
    );
  }

  const result: RegistriesFile = { aliases: new Map(), registries: [] };
  if (data['unqualified-search-registries'] !== undefined) {
    result.searchRegistries = stringList(data['unqualified-search-registries'], `${file}: unqualified-search-registries`);
    for (const host of result.searchRegistries) checkHost(host, `${file}: unqualified-search-registries`);
  }

  const aliases = data.aliases;
  if (aliases !== undefined) {
    if (!isTable(aliases)) throw new InvalidArgumentError(`${file}: aliases must be a table of short name = "registry/name"`);
    for (const [short, target] of Object.entries(aliases)) {
      result.aliases.set(short, checkAlias(short, target, file));
    }
  }

  const entries = data.registry ?? [];
  if (!Array.isArray(entries)) throw new InvalidArgumentError(`${file}: registry must be an array of tables ([[registry]])`);
  entries.forEach((entry, index) => result.registries.push(parseRegistryEntry(entry, `${file}: registry[${index}]`, file)));
  return result;
}

function mergeRegistriesFile(config: RegistriesConfig, file: RegistriesFile): void {
  if (file.searchRegistries !== undefined) config.searchRegistries = file.searchRegistries;
  for (const [short, target] of file.aliases) config.aliases.set(short, target);
  for (const entry of file.registries) {
    const index = config.registries.findIndex((existing) => existing.prefix === entry.prefix);
    if (index >= 0) config.registries[index] = entry;
    else config.registries.push(entry);
  }
}

function parseRegistryEntry(value: unknown, where: string, source: string): RegistryEntry {
  if (!isTable(value)) throw new InvalidArgumentError(`${where}: must be a table`);

  const location = optionalString(value.location, `${where}.location`) ?? '';
  const prefix = optionalString(value.prefix, `${where}.prefix`) ?? location;
  if (prefix === '') throw new InvalidArgumentError(`${where}: set prefix or location`);
  checkPrefix(prefix, `${where}.prefix`);
  if (location !== '') checkLocation(location, `${where}.location`);
  if (prefix.startsWith('*.') && location !== '') {
    throw new InvalidArgumentError(`${where}: a wildcard prefix "${prefix}" cannot have a location; leave location unset`);
  }

  const mirrors: MirrorEntry[] = [];
  const mirrorList = value.mirror ?? [];
  if (!Array.isArray(mirrorList)) throw new InvalidArgumentError(`${where}.mirror: must be an array of tables ([[registry.mirror]])`);
  mirrorList.forEach((mirror, index) => {
    const at = `${where}.mirror[${index}]`;
    if (!isTable(mirror)) throw new InvalidArgumentError(`${at}: must be a table`);
    const mirrorLocation = optionalString(mirror.location, `${at}.location`);
    if (mirrorLocation === undefined || mirrorLocation === '') throw new InvalidArgumentError(`${at}.location: is required`);
    checkLocation(mirrorLocation, `${at}.location`);
    const pullFromMirror = optionalString(mirror['pull-from-mirror'], `${at}.pull-from-mirror`) ?? 'all';
    if (!['all', 'digest-only', 'tag-only'].includes(pullFromMirror)) {
      throw new InvalidArgumentError(`${at}.pull-from-mirror: "${pullFromMirror}" is not allowed (allowed: all, digest-only, tag-only)`);
    }
    mirrors.push({
      location: mirrorLocation,
      insecure: optionalBoolean(mirror.insecure, `${at}.insecure`) ?? false,
      pullFromMirror: pullFromMirror as PullFromMirror,
    });
  });

  return {
    prefix,
    location,
    insecure: optionalBoolean(value.insecure, `${where}.insecure`) ?? false,
    blocked: optionalBoolean(value.blocked, `${where}.blocked`) ?? false,
    mirrors,
    mirrorByDigestOnly: optionalBoolean(value['mirror-by-digest-only'], `${where}.mirror-by-digest-only`) ?? false,
    source,
  };
}

/**
 * Returns the fully qualified names to try for `reference`, in order. A qualified reference is
 * returned as is. An unqualified one maps to its alias, or else to its name under each search
 * registry. Throws InvalidArgumentError when an unqualified name cannot be resolved.
 */
export function resolveNames(config: RegistriesConfig, reference: ImageReference, qualified: boolean): ImageReference[] {
  if (qualified) return [reference];

  const alias = config.aliases.get(reference.path) ?? config.aliases.get(reference.path.replace(/^library\//, ''));
  if (alias !== undefined) {
    const target = parseReference(alias).reference;
    return [{ ...target, tag: reference.tag ?? target.tag, digest: reference.digest ?? target.digest }];
  }

  if (config.searchRegistries.length === 0) {
    const files = config.files.join(', ') || '(none)';
    throw new InvalidArgumentError(
      `image "${formatReference(reference)}" names no registry, and no alias or unqualified-search-registries entry resolves it (registries.conf files: ${files}); use a fully qualified name such as docker.io/library/${reference.path}`,
    );
  }
  return config.searchRegistries.map((host) => qualifyReference(reference, host));
}

/** Returns the `[[registry]]` entry with the longest prefix that matches `name` (`domain/path`). */
export function findRegistry(config: RegistriesConfig, name: string): RegistryEntry | undefined {
  let best: RegistryEntry | undefined;
  for (const entry of config.registries) {
    if (!prefixMatches(entry.prefix, name)) continue;
    if (!best || entry.prefix.length > best.prefix.length) best = entry;
  }
  return best;
}

/**
 * Lists where to pull `reference` from: its mirrors in configured order (those its pull kind may
 * use), then the primary location. Throws FailedPreconditionError for a blocked registry.
 */
export function pullEndpoints(config: RegistriesConfig, reference: ImageReference): PullEndpoint[] {
  const name = repositoryName(reference);
  const entry = findRegistry(config, name);
  if (!entry) return [splitLocation(name, false, false)];

  if (entry.blocked) {
    throw new FailedPreconditionError(
      `image "${formatReference(reference)}": registry prefix "${entry.prefix}" is blocked in ${entry.source}`,
    );
  }

  const byDigest = reference.digest !== undefined;
  const endpoints: PullEndpoint[] = [];
  for (const mirror of entry.mirrors) {
    if (entry.mirrorByDigestOnly && !byDigest) continue;
    if (mirror.pullFromMirror === 'digest-only' && !byDigest) continue;
    if (mirror.pullFromMirror === 'tag-only' && byDigest) continue;
    endpoints.push(splitLocation(rewrite(entry, mirror.location, name), mirror.insecure, true));
  }
  endpoints.push(splitLocation(rewrite(entry, entry.location, name), entry.insecure, false));
  return endpoints;
}

/** Returns true when `host` is marked insecure by the entry that matches it. */
export function isInsecureHost(config: RegistriesConfig, host: string): boolean {
  return findRegistry(config, host)?.insecure ?? false;
}

function rewrite(entry: RegistryEntry, location: string, name: string): string {
  if (location === '' || entry.prefix.startsWith('*.')) return name;
  return location + name.slice(entry.prefix.length);
}

function splitLocation(location: string, insecure: boolean, mirror: boolean): PullEndpoint {
  const slash = location.indexOf('/');
  return { host: location.slice(0, slash), path: location.slice(slash + 1), insecure, mirror };
}

function prefixMatches(prefix: string, name: string): boolean {
  if (prefix.startsWith('*.')) {
    const host = name.split('/')[0] ?? '';
    return host.endsWith(prefix.slice(1));
  }
  return name === prefix || name.startsWith(`${prefix}/`);
}

function checkPrefix(prefix: string, where: string): void {
  if (prefix.startsWith('*.')) {
    if (prefix.includes('/') || !/^\*(\.[a-zA-Z0-9-]+)+$/.test(prefix)) {
      throw new InvalidArgumentError(`${where}: wildcard "${prefix}" must have the form *.example.com, without a path`);
    }
    return;
  }
  checkLocation(prefix, where);
}

function checkLocation(location: string, where: string): void {
  if (/^[a-z]+:\/\//i.test(location)) throw new InvalidArgumentError(`${where}: "${location}" must not have a URL scheme; write host[:port][/path]`);
  if (location.includes('@')) throw new InvalidArgumentError(`${where}: "${location}" must not contain a digest`);
  const host = location.split('/')[0] ?? '';
  checkHost(host, where);
}

function checkHost(host: string, where: string): void {
  if (!/^(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/.test(host)) {
    throw new InvalidArgumentError(`${where}: "${host}" is not a registry host[:port]`);
  }
}

function checkAlias(short: string, target: unknown, file: string): string {
  if (typeof target !== 'string') throw new InvalidArgumentError(`${file}: aliases."${short}" must be a string`);
  const parsed = parseReference(target);
  if (!parsed.qualified) {
    throw new InvalidArgumentError(`${file}: aliases."${short}" = "${target}" must be a fully qualified name (registry/repository)`);
  }
  return target;
}

function stringList(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) {
    throw new InvalidArgumentError(`${where}: must be an array of strings`);
  }
  return value as string[];
}

function optionalString(value: unknown, where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new InvalidArgumentError(`${where}: must be a string`);
  return value;
}

function optionalBoolean(value: unknown, where: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw new InvalidArgumentError(`${where}: must be true or false`);
  return value;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new InvalidArgumentError(`${file}: cannot read registries configuration: ${errorMessage(err)}`);
  }
}

async function listDropIns(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw new InvalidArgumentError(`${dir}: cannot read registries.conf drop-in directory: ${errorMessage(err)}`);
  }
  return names.filter((name) => name.endsWith('.conf')).sort().map((name) => path.join(dir, name));
}
