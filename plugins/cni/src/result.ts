import { isIP } from 'node:net';
import type { CniResult, ResultIp } from './spec.js';

/**
 * Checks that a plugin's ADD output has the shape of a result document and returns it typed.
 * Returns an error message instead when it does not.
 */
export function asResult(output: unknown): CniResult | string {
  if (typeof output !== 'object' || output === null || Array.isArray(output)) return 'the result is not a JSON object';

  const result = output as Record<string, unknown>;
  if (typeof result.cniVersion !== 'string') return 'the result has no cniVersion';
  if (result.interfaces !== undefined && !Array.isArray(result.interfaces)) return 'the result\'s "interfaces" is not an array';
  if (result.ips !== undefined) {
    if (!Array.isArray(result.ips)) return 'the result\'s "ips" is not an array';
    for (const [index, entry] of result.ips.entries()) {
      const address = (entry as { address?: unknown } | null)?.address;
      if (typeof address !== 'string' || isIP(stripPrefix(address)) === 0) {
        return `the result's ips[${index}].address ${JSON.stringify(address)} is not an address in CIDR notation`;
      }
    }
  }
  return result as CniResult;
}

/**
 * Returns the pod's addresses from a result, without prefix length: those on interface `ifName`
 * inside the namespace, or on no named interface. IPv4 comes first, so that a dual-stack pod's
 * primary IP is its IPv4 address, as the kubelet expects by default.
 */
export function podIps(result: CniResult, ifName: string): string[] {
  const interfaces = result.interfaces ?? [];
  const onPod = (entry: ResultIp): boolean => {
    if (entry.interface === undefined) return true;
    const target = interfaces[entry.interface];
    if (!target) return true;
    return target.sandbox !== undefined && target.sandbox !== '' && target.name === ifName;
  };

  const addresses = (result.ips ?? []).filter(onPod).map((entry) => stripPrefix(entry.address));
  const unique = [...new Set(addresses)];
  return [...unique.filter((address) => isIP(address) === 4), ...unique.filter((address) => isIP(address) === 6)];
}

function stripPrefix(cidr: string): string {
  const slash = cidr.indexOf('/');
  return slash === -1 ? cidr : cidr.slice(0, slash);
}
