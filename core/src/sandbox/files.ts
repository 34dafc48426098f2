import { isIP } from 'node:net';
import { readFile } from 'node:fs/promises';
import { InternalError, InvalidArgumentError, errorMessage, isErrno } from '../errors.js';
import type { Logger } from '../log.js';

export interface DnsSettings {
  servers: string[];
  searches: string[];
  options: string[];
}

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 chars at most. */
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const SEARCH_DOMAIN = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/i;
const RESOLV_OPTION = /^[a-z0-9_-]+(:[0-9]+)?$/i;

/** Validates the pod host name; the kernel limits a UTS name to 64 bytes. */
export function validateHostname(hostname: string): void {
  if (hostname.length > 64 || !HOSTNAME.test(hostname)) {
    throw new InvalidArgumentError(
      `hostname: invalid value ${JSON.stringify(hostname.slice(0, 80))}; it must be an RFC 1123 host name of at most 64 characters`,
    );
  }
}

/** Validates DNSConfig so that no entry can add a line of its own to resolv.conf. */
export function validateDns(dns: DnsSettings): void {
  for (const [index, server] of dns.servers.entries()) {
    if (isIP(server) === 0) {
      throw new InvalidArgumentError(`dns_config.servers[${index}]: ${JSON.stringify(server)} is not an IPv4 or IPv6 address`);
    }
  }
  for (const [index, search] of dns.searches.entries()) {
    if (!SEARCH_DOMAIN.test(search)) {
      throw new InvalidArgumentError(`dns_config.searches[${index}]: ${JSON.stringify(search)} is not a domain name`);
    }
  }
  for (const [index, option] of dns.options.entries()) {
    if (!RESOLV_OPTION.test(option)) {
      throw new InvalidArgumentError(
        `dns_config.options[${index}]: ${JSON.stringify(option)} is not a resolver option (examples: ndots:5, edns0)`,
      );
    }
  }
  if (dns.searches.length > 32) {
    throw new InvalidArgumentError(`dns_config.searches: ${dns.searches.length} domains given; at most 32 are allowed`);
  }
}

/**
 * Returns the pod's resolv.conf: built from DNSConfig when it has any entry, else the host's
 * file, which is what a pod with DNS policy Default expects. A missing host file gives an empty
 * resolv.conf. Raises InternalError when the host file exists but cannot be read (EACCES,
 * EISDIR, EIO), because an empty file would leave the pod without DNS and no sign of why.
 */
export async function renderResolvConf(dns: DnsSettings, log: Logger, hostFile = '/etc/resolv.conf'): Promise<string> {
  if (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0) {
    try {
      return await readFile(hostFile, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        log.warn({ path: hostFile }, 'host resolv.conf not found; the pod gets an empty resolv.conf');
        return '';
      }
      throw new InternalError(`pod resolv.conf: failed to read the host's resolv.conf ${hostFile}: ${errorMessage(err)}`, { cause: err });
    }
  }

  const lines: string[] = [];
  if (dns.searches.length > 0) lines.push(`search ${dns.searches.join(' ')}`);
  for (const server of dns.servers) lines.push(`nameserver ${server}`);
  if (dns.options.length > 0) lines.push(`options ${dns.options.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** Returns the pod's /etc/hosts: loopback names and, when the pod has an IP, its host name. */
export function renderHosts(hostname: string, ips: string[]): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  for (const ip of ips) lines.push(`${ip}\t${hostname}`);
  return `${lines.join('\n')}\n`;
}
