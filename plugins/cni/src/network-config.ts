import path from 'node:path';
import { NAME_PATTERN, SUPPORTED_VERSIONS, isSupportedVersion, type NetworkConfList, type PluginConf } from './spec.js';

/** File name extensions read from the config directories. */
export const CONFIG_EXTENSIONS = ['.conf', '.conflist', '.json'];

/** A network config file that cannot be used; the message is the reason, without the file name. */
export class InvalidNetworkConfig extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidNetworkConfig';
  }
}

/**
 * Parses the text of one config file into a network configuration list. A `.conflist` must be a
 * list, a `.conf` a single plugin config (converted to a list of one), and a `.json` file may be
 * either. Throws InvalidNetworkConfig naming the first problem.
 */
export function parseNetworkConfig(fileName: string, text: string): NetworkConfList {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (err) {
    throw new InvalidNetworkConfig(`invalid JSON: ${(err as Error).message}`);
  }
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new InvalidNetworkConfig('the document must be a JSON object');
  }

  const object = document as Record<string, unknown>;
  const extension = path.extname(fileName).toLowerCase();
  const isList = extension === '.conflist' || (extension === '.json' && 'plugins' in object);
  if (extension === '.conflist' && !('plugins' in object)) {
    throw new InvalidNetworkConfig('a .conflist file needs a "plugins" array');
  }
  if (extension === '.conf' && 'plugins' in object) {
    throw new InvalidNetworkConfig('a .conf file contains one plugin config, but this one has a "plugins" list; rename it to .conflist');
  }

  const list = isList ? object : listFromSingle(object);
  return validateList(list);
}

/** Wraps a single-plugin config as a list of one, keeping its name and version at both levels. */
function listFromSingle(conf: Record<string, unknown>): Record<string, unknown> {
  return { cniVersion: conf.cniVersion, name: conf.name, plugins: [conf] };
}

function validateList(list: Record<string, unknown>): NetworkConfList {
  const { cniVersion, name, plugins, disableCheck } = list;

  if (typeof name !== 'string' || name === '') {
    throw new InvalidNetworkConfig('"name" is missing or not a string');
  }
  if (!NAME_PATTERN.test(name)) {
    throw new InvalidNetworkConfig(`"name" ${JSON.stringify(name)} may contain only letters, digits, "_", "." and "-", starting with a letter or digit`);
  }

  if (cniVersion === undefined) {
    throw new InvalidNetworkConfig('"cniVersion" is missing');
  }
  if (!isSupportedVersion(cniVersion)) {
    throw new InvalidNetworkConfig(`"cniVersion" ${JSON.stringify(cniVersion)} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
  }

  if (!Array.isArray(plugins) || plugins.length === 0) {
    throw new InvalidNetworkConfig('"plugins" must be a non-empty array');
  }
  const checked = plugins.map((plugin, index) => validatePlugin(plugin, index));

  let check: boolean | undefined;
  if (disableCheck !== undefined) {
    // libcni and other runtimes also take the strings "true" and "false" here.
    if (typeof disableCheck === 'boolean') check = disableCheck;
    else if (disableCheck === 'true' || disableCheck === 'false') check = disableCheck === 'true';
    else throw new InvalidNetworkConfig(`"disableCheck" must be a boolean, not ${JSON.stringify(disableCheck)}`);
  }

  const result: NetworkConfList = { ...list, cniVersion, name, plugins: checked };
  if (check === undefined) delete result.disableCheck;
  else result.disableCheck = check;
  return result;
}

function validatePlugin(plugin: unknown, index: number): PluginConf {
  const where = `plugins[${index}]`;
  if (typeof plugin !== 'object' || plugin === null || Array.isArray(plugin)) {
    throw new InvalidNetworkConfig(`${where} must be an object`);
  }

  const conf = plugin as Record<string, unknown>;
  checkType(conf.type, `${where}.type`);

  if (conf.capabilities !== undefined && (typeof conf.capabilities !== 'object' || conf.capabilities === null || Array.isArray(conf.capabilities))) {
    throw new InvalidNetworkConfig(`${where}.capabilities must be an object`);
  }

  if (conf.ipam !== undefined) {
    if (typeof conf.ipam !== 'object' || conf.ipam === null || Array.isArray(conf.ipam)) {
      throw new InvalidNetworkConfig(`${where}.ipam must be an object`);
    }
    const ipamType = (conf.ipam as Record<string, unknown>).type;
    // An empty ipam object is allowed: some plugins take one and need no IPAM plugin.
    if (ipamType !== undefined) checkType(ipamType, `${where}.ipam.type`);
  }

  return conf as PluginConf;
}

/** Checks that a plugin type is a binary's file name, never a path. */
function checkType(type: unknown, where: string): void {
  if (typeof type !== 'string' || type === '') {
    throw new InvalidNetworkConfig(`${where} is missing or not a string`);
  }
  if (type.includes('/') || type === '.' || type === '..') {
    throw new InvalidNetworkConfig(`${where} ${JSON.stringify(type)} must be a plain file name, not a path`);
  }
}

/** Plugin binaries a list needs: each plugin's type and each IPAM type, without repeats. */
export function requiredBinaries(list: NetworkConfList): string[] {
  const types = new Set<string>();
  for (const plugin of list.plugins) {
    types.add(plugin.type);
    if (typeof plugin.ipam?.type === 'string') types.add(plugin.ipam.type);
  }
  return [...types];
}
