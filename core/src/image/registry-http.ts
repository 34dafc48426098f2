/**
 * HTTP pieces shared by the registry client in the daemon and the layer downloads in the image
 * worker processes: connection pools, redirects and response helpers.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import type { Dispatcher } from 'undici';
import { errorMessage, InvalidArgumentError, isErrno, UnavailableError } from '../errors.js';

export const USER_AGENT = 'berth';
const MAX_REDIRECTS = 5;

type Undici = typeof import('undici');
let undici: Promise<Undici> | undefined;

/**
 * Loads undici on first use. The daemon sends HTTP requests only for pulls, and importing undici
 * at start-up would add to the RSS of an idle daemon.
 */
function loadUndici(): Promise<Undici> {
  undici ??= import('undici');
  return undici;
}

/** undici's request(), with undici loaded on first use. */
export async function httpRequest(url: string | URL, options: Parameters<Undici['request']>[1]): Promise<Dispatcher.ResponseData> {
  const { request } = await loadUndici();
  // The opaque type parameter is unused here, so the response is the default ResponseData.
  return (await request(url, options)) as Dispatcher.ResponseData;
}

/** A failure worth retrying: a connection error or a 5xx response. */
export class TransientError extends Error {}

/** One GET of a layer blob, prepared by the daemon and sent by an image worker process. */
export interface BlobRequest {
  url: string;
  /** Authorization header value, sent only to the origin of `url`. */
  authorization?: string;
  insecure: boolean;
  /** The containers-certs.d directory with the CA files of each host. */
  certsDir: string;
  /** `host/path` of the repository, for messages. */
  label: string;
}

/** The outcome of one GET of a layer blob that did not fail for good. */
export type BlobAttempt =
  | { outcome: 'complete' }
  /**
   * The registry, or the host it redirected to, returned an error status. `challenge` is the
   * WWW-Authenticate header of a response from the registry's own origin. `redirectedTo` is the
   * origin of a response from another host, whose challenge is dropped.
   */
  | { outcome: 'status'; statusCode: number; detail: string; challenge?: string; redirectedTo?: string }
  /** No response, or the body broke off after `received` bytes of the blob in all. */
  | { outcome: 'broken'; message: string; received: number };

/**
 * Keep-alive connection pools, one per `host[:port]` and TLS mode, trusting the CA files of
 * `<certsDir>/<host[:port]>/*.crt` (containers-certs.d(5)) on top of Node's bundled roots.
 */
export class AgentCache {
  private readonly agents = new Map<string, Promise<Dispatcher>>();

  constructor(readonly certsDir: string) {}

  agentFor(host: string, insecure: boolean): Promise<Dispatcher> {
    const key = `${host}|${insecure}`;
    let agent = this.agents.get(key);
    if (!agent) {
      agent = Promise.all([readCaFiles(path.join(this.certsDir, host)), loadUndici()]).then(
        ([ca, { Agent }]) =>
          new Agent({
            // A `ca` list replaces Node's bundled roots, so they are added back.
            connect: { rejectUnauthorized: !insecure, ...(ca.length > 0 ? { ca: [...tls.rootCertificates, ...ca] } : {}) },
            headersTimeout: 60_000,
            bodyTimeout: 120_000,
          }),
      );
      this.agents.set(key, agent);
      agent.catch(() => this.agents.delete(key));
    }
    return agent;
  }

  async close(): Promise<void> {
    const agents = await Promise.allSettled(this.agents.values());
    this.agents.clear();
    await Promise.allSettled(agents.map((agent) => (agent.status === 'fulfilled' ? agent.value.close() : undefined)));
  }
}

/** The redirect rules of a GET to a registry and the credentials it may send. */
export interface RedirectPolicy {
  /** `host/path` of the repository, the prefix of error messages. */
  label: string;
  insecure: boolean;
  agents: AgentCache;
  /** Returns the Authorization header value for requests to the registry's own origin. */
  authorization: () => Promise<string | undefined>;
}

/** The final response of a GET that may have followed redirects. */
export interface RedirectedResponse extends Dispatcher.ResponseData {
  /** Origin of the final response when it is not the origin of the first request, else undefined. */
  redirectedTo?: string;
}

/**
 * Sends a GET and follows up to 5 redirects. Credentials go only to the origin of `url`, never
 * to the blob storage a registry redirects to, and a secure registry may not redirect from HTTPS
 * to plain HTTP. Callers must not act on a WWW-Authenticate challenge of a response with
 * `redirectedTo` set, because responding to it would send the registry's credentials to that host.
 * Throws TransientError when no response arrives, and UnavailableError without retry when the
 * host does not speak TLS or its certificate is rejected.
 */
export async function getFollowingRedirects(
  url: string,
  headers: Record<string, string>,
  policy: RedirectPolicy,
  signal?: AbortSignal,
): Promise<RedirectedResponse> {
  const origin = new URL(url).origin;
  let current = url;
  for (let hop = 0; ; hop++) {
    const target = new URL(current);
    const requestHeaders: Record<string, string> = { 'user-agent': USER_AGENT, ...headers };
    if (target.origin === origin) {
      const authorization = await policy.authorization();
      if (authorization) requestHeaders.authorization = authorization;
    }

    let response: Dispatcher.ResponseData;
    try {
      const dispatcher = await policy.agents.agentFor(target.host, policy.insecure);
      response = await httpRequest(current, { method: 'GET', headers: requestHeaders, dispatcher, signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      // A TLS handshake answered in plain HTTP fails the same way on every retry.
      if (target.protocol === 'https:' && /wrong version number|ERR_SSL_WRONG_VERSION_NUMBER/i.test(`${(err as NodeJS.ErrnoException).code} ${errorMessage(err)}`)) {
        throw new UnavailableError(
          `${policy.label}: ${target.host} does not speak TLS; if it is a plain-HTTP registry, mark it insecure = true in a [[registry]] entry of registries.conf`,
        );
      }
      // An untrusted, expired or misnamed certificate fails the same way on every retry too.
      const certificateCode = tlsCertificateErrorCode(err);
      if (target.protocol === 'https:' && certificateCode !== undefined) {
        throw new UnavailableError(
          `${policy.label}: the TLS certificate of ${target.host} was rejected (${certificateCode}: ${errorMessage(err).trim()}); ` +
            `if a private CA signed it, put that CA as ${path.join(policy.agents.certsDir, target.host, 'ca.crt')}, ` +
            'or mark the registry insecure = true in registries.conf to skip verification',
        );
      }
      throw new TransientError(errorMessage(err).trim());
    }

    if (![301, 302, 303, 307, 308].includes(response.statusCode)) {
      return target.origin === origin ? response : Object.assign(response, { redirectedTo: target.origin });
    }
    const location = headerValue(response.headers.location);
    discardBody(response);
    if (!location) throw new UnavailableError(`${policy.label}: redirect ${response.statusCode} without a Location header`);
    if (hop >= MAX_REDIRECTS) throw new UnavailableError(`${policy.label}: more than ${MAX_REDIRECTS} redirects for ${redactQuery(url)}`);
    const next = new URL(location, current);
    if (next.protocol === 'http:' && target.protocol === 'https:' && !policy.insecure) {
      throw new UnavailableError(`${policy.label}: redirect from HTTPS to plain HTTP (${next.host}) refused for a secure registry`);
    }
    current = next.toString();
  }
}

/** OpenSSL verification codes that Node sets on a TLS socket error, see `tls.TLSSocket.authorizationError`. */
const CERTIFICATE_ERROR_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

/** Returns the certificate verification code of a request error (or of its cause), if it has one. */
function tlsCertificateErrorCode(err: unknown): string | undefined {
  for (let current = err, depth = 0; current instanceof Error && depth < 3; current = current.cause, depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    if (code !== undefined && CERTIFICATE_ERROR_CODES.has(code)) return code;
  }
  return undefined;
}

/** Releases a response body that is not read to its end; undici reports the abort as an error event, which is expected here. */
export function discardBody(response: Dispatcher.ResponseData): void {
  response.body.on('error', () => undefined);
  response.body.destroy();
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Drops the query string of a URL for logs and messages, because signed blob URLs carry secrets there. */
export function redactQuery(url: string): string {
  const parsed = new URL(url);
  return parsed.search === '' ? url : `${parsed.origin}${parsed.pathname}?…`;
}

export async function readLimited(body: Dispatcher.ResponseData['body'], limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > limit) throw new InvalidArgumentError(`${what}: larger than the ${limit} bytes allowed`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Returns `: CODE message` from an OCI error body, or an empty string. */
export async function errorDetail(response: Dispatcher.ResponseData): Promise<string> {
  try {
    const text = (await readLimited(response.body, 64 * 1024, 'error body')).toString('utf8');
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const first = body.errors?.[0];
    if (!first) return '';
    return `: ${[first.code, first.message].filter(Boolean).join(' ')}`;
  } catch {
    return '';
  }
}

async function readCaFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
    throw err;
  }
  const files = names.filter((name) => name.endsWith('.crt')).sort();
  return Promise.all(files.map((name) => readFile(path.join(dir, name), 'utf8')));
}
