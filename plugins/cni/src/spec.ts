// Facts of the CNI specification (github.com/containernetworking/cni, SPEC.md, versions 0.3.0 to
// 1.0.0) that the provider relies on: versions, commands, error codes and document shapes.

/** Spec versions this provider speaks, oldest first. 0.1.0 and 0.2.0 have no chaining and are rejected. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

/** Well-known error codes; 100 and above are plugin-specific. */
export const CNI_ERROR_CODES: Record<number, string> = {
  1: 'incompatible CNI version',
  2: 'unsupported field in network configuration',
  3: 'container unknown or does not exist',
  4: 'invalid necessary environment variables',
  5: 'I/O failure',
  6: 'failed to decode content',
  7: 'invalid network config',
  11: 'try again later',
};

/** Network names and container ids: alphanumerics, then also `_`, `.` and `-`. */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Linux limits interface names to 15 bytes (IFNAMSIZ minus the terminating NUL). */
export const MAX_IFNAME_LENGTH = 15;

export function isSupportedVersion(version: unknown): version is CniVersion {
  return typeof version === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(version);
}

/** CHECK and passing prevResult on DEL came with spec 0.4.0. */
export function supportsCheck(version: CniVersion): boolean {
  return version === '0.4.0' || version === '1.0.0';
}

/** Returns an error message when `name` cannot be a CNI_IFNAME, undefined when it can. */
export function ifNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) > MAX_IFNAME_LENGTH) return `is longer than ${MAX_IFNAME_LENGTH} bytes`;
  if (name === '.' || name === '..') return 'must not be "." or ".."';
  if (/[/:\s]/.test(name)) return 'must not contain "/", ":" or white space';
  return undefined;
}

/** One plugin entry of a network configuration list; keys other than these pass through untouched. */
export interface PluginConf {
  type: string;
  capabilities?: Record<string, unknown>;
  ipam?: { type?: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** A network configuration list, the form every `.conf` file is converted to. */
export interface NetworkConfList {
  cniVersion: CniVersion;
  name: string;
  disableCheck?: boolean;
  plugins: PluginConf[];
  [key: string]: unknown;
}

export interface ResultInterface {
  name: string;
  mac?: string;
  /** Set for interfaces inside the pod's namespace: the namespace path. */
  sandbox?: string;
}

export interface ResultIp {
  /** CIDR notation: address and prefix length. */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
  /** Spec 0.3.x only: "4" or "6". */
  version?: string;
}

/** The success result of ADD, in any supported version. */
export interface CniResult {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIp[];
  routes?: { dst: string; gw?: string }[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
  [key: string]: unknown;
}

/** The document a plugin prints on stdout when it fails. */
export interface CniErrorDocument {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

export interface VersionInfo {
  cniVersion?: string;
  supportedVersions: string[];
}
