import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { BerthError, errorMessage, InvalidArgumentError, PermissionDeniedError, UnavailableError } from '../errors.js';
import { basicCredentials } from './auth-file.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import {
  AgentCache,
  httpRequest,
  type BlobAttempt,
  type BlobRequest,
  discardBody,
  errorDetail,
  getFollowingRedirects,
  headerValue,
  readLimited,
  redactQuery,
  type RedirectedResponse,
  TransientError,
  USER_AGENT,
} from './registry-http.js';
import type { RegistryAuth } from './store.js';
import type { PullEndpoint } from './registries-conf.js';

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const RETRY_BASE_MS = 250;
const RETRY_MAX_MS = 8_000;
/** Lifetime assumed for a token whose response gives none, as the token protocol specifies (60 s). */
const DEFAULT_TOKEN_SECONDS = 60;

/** The registry has no such manifest or repository; the next endpoint or name may have it. */
export class ManifestUnknownError extends BerthError {
  constructor(message: string) {
    super('NotFound', message);
  }
}

/** The registry rejected the credentials (or their absence). */
export class RegistryAuthError extends PermissionDeniedError {}

export interface RegistryClientOptions {
  /** Retries of one request after a connection error or a 5xx response. */
  retries: number;
  /** Directory with one subdirectory per `host[:port]` holding `*.crt` CA files, as in containers-certs.d(5). */
  certsDir: string;
}

export interface FetchedManifest {
  bytes: Buffer;
  contentType?: string;
  /** sha256 of the bytes, as computed here. */
  digest: string;
}

interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/**
 * An HTTP client for the OCI distribution API. It keeps one connection pool per registry host, the
 * scheme each insecure host uses, and bearer tokens until they expire.
 */
export class RegistryClient {
  /** @internal */
  readonly agents: AgentCache;
  private readonly schemes = new Map<string, Promise<'https' | 'http'>>();
  private readonly tokens = new Map<string, CachedToken>();

  constructor(private readonly options: RegistryClientOptions) {
    this.agents = new AgentCache(options.certsDir);
  }

  /** Opens a session for one repository on one endpoint with the credentials to use there. */
  repository(endpoint: PullEndpoint, auth: RegistryAuth | undefined, log: Logger): RepositorySession {
    return new RepositorySession(this, endpoint, auth, log);
  }

  async close(): Promise<void> {
    await this.agents.close();
  }

  /** @internal */
  get certsDir(): string {
    return this.options.certsDir;
  }

  /** @internal */
  get retries(): number {
    return this.options.retries;
  }

  /** @internal Decides the scheme of a host once: HTTPS, or plain HTTP when the host is insecure and has no TLS. */
  scheme(endpoint: PullEndpoint, probe: (scheme: 'https' | 'http') => Promise<void>): Promise<'https' | 'http'> {
    const key = `${endpoint.host}|${endpoint.insecure}`;
    let scheme = this.schemes.get(key);
    if (!scheme) {
      scheme = (async () => {
        if (!endpoint.insecure) return 'https';
        try {
          await probe('https');
          return 'https';
        } catch (err) {
          if (err instanceof BerthError && !(err instanceof UnavailableError)) return 'https';
          return 'http';
        }
      })();
      this.schemes.set(key, scheme);
      scheme.catch(() => this.schemes.delete(key));
    }
    return scheme;
  }

  /** @internal */
  cachedToken(key: string): string | undefined {
    const cached = this.tokens.get(key);
    if (!cached) return undefined;
    if (cached.expiresAt <= Date.now()) {
      this.tokens.delete(key);
      return undefined;
    }
    return cached.token;
  }

  /** @internal */
  storeToken(key: string, token: string, seconds: number): void {
    // Renew a little early so a token does not expire between check and use.
    this.tokens.set(key, { token, expiresAt: Date.now() + Math.max(seconds - 5, 1) * 1000 });
  }
}

/** Requests to one repository on one registry endpoint, authenticated as the registry's challenge requires. */
export class RepositorySession {
  private challenge?: Challenge;
  private baseUrl?: string;

  constructor(
    private readonly client: RegistryClient,
    readonly endpoint: PullEndpoint,
    private readonly auth: RegistryAuth | undefined,
    private readonly log: Logger,
  ) {}

  /** Where requests go, for messages: `host/path`. */
  get label(): string {
    return `${this.endpoint.host}/${this.endpoint.path}`;
  }

  /**
   * Fetches the manifest `reference` (tag or digest). Throws ManifestUnknownError on 404,
   * RegistryAuthError on 401/403 and UnavailableError when the registry cannot be reached.
   */
  async manifest(reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const url = await this.url(`manifests/${reference}`);
    const response = await this.send(url, { accept: MANIFEST_ACCEPT }, signal);
    try {
      if (response.statusCode === 404) {
        throw new ManifestUnknownError(`${this.label}: manifest "${reference}" not found (HTTP 404${await errorDetail(response)})`);
      }
      await this.checkStatus(response, `manifest "${reference}"`);

      const bytes = await readLimited(response.body, MAX_MANIFEST_BYTES, `${this.label}: manifest "${reference}"`);
      const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const contentType = headerValue(response.headers['content-type']);
      return contentType === undefined ? { bytes, digest } : { bytes, contentType, digest };
    } finally {
      discardBody(response);
    }
  }

  /**
   * Fetches a small blob (an image config) into memory and verifies its digest. A body that
   * breaks off is fetched again, up to the retry limit.
   */
  async blobBytes(digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.blobBytesOnce(digest, maxBytes, signal);
      } catch (err) {
        if (!(err instanceof TransientError) || attempt >= this.client.retries) throw asBerthError(err, `${this.label}: blob ${digest}`);
        const delay = backoff(attempt);
        this.log.warn({ blob: digest, registry: this.endpoint.host, attempt: attempt + 1, delay_ms: delay, err: errorMessage(err) }, 'blob download failed; retrying');
        await sleep(delay, undefined, { signal });
      }
    }
  }

  private async blobBytesOnce(digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
    const response = await this.send(await this.url(`blobs/${digest}`), {}, signal, false);
    try {
      if (response.statusCode === 404) throw new ManifestUnknownError(`${this.label}: blob ${digest} not found (HTTP 404)`);
      await this.checkStatus(response, `blob ${digest}`);
      let bytes: Buffer;
      try {
        bytes = await readLimited(response.body, maxBytes, `${this.label}: blob ${digest}`);
      } catch (err) {
        if (err instanceof BerthError) throw err;
        throw new TransientError(`download of blob ${digest} broke off: ${errorMessage(err)}`);
      }
      const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      if (actual !== digest) throw new InvalidArgumentError(`${this.label}: blob ${digest} has digest ${actual}; the registry sent other content`);
      return bytes;
    } finally {
      discardBody(response);
    }
  }

  /**
   * Downloads the layer blob `digest` through `attempt`, which sends one GET as its request
   * describes and continues the download where the previous attempt stopped. A 401 renews the
   * challenge once. A connection error, a body that breaks off or a 5xx is tried again, up to the
   * retry limit. Throws ManifestUnknownError on 404, RegistryAuthError on 401/403,
   * UnavailableError when the retries run out and InvalidArgumentError on another status.
   */
  async fetchBlob(digest: string, attempt: (request: BlobRequest) => Promise<BlobAttempt>, signal?: AbortSignal): Promise<void> {
    let challengeRenewed = false;
    for (let retry = 0; ; ) {
      const authorization = await this.authorization(signal);
      const request: BlobRequest = {
        url: await this.url(`blobs/${digest}`),
        insecure: this.endpoint.insecure,
        certsDir: this.client.certsDir,
        label: this.label,
        ...(authorization ? { authorization } : {}),
      };
      const result = await attempt(request);
      if (result.outcome === 'complete') return;

      if (result.outcome === 'status') {
        const { statusCode, detail } = result;
        if (statusCode === 401 && result.redirectedTo !== undefined) this.throwForeignChallenge(result.redirectedTo, `blob ${digest}`);
        if (statusCode === 401 && !challengeRenewed) {
          challengeRenewed = true;
          this.acceptChallenge(result.challenge);
          continue;
        }
        if (statusCode === 404) throw new ManifestUnknownError(`${this.label}: blob ${digest} not found (HTTP 404${detail})`);
        if (statusCode < 500) this.throwForStatus(statusCode, detail, `blob ${digest}`);
      }

      const reason = result.outcome === 'status' ? `HTTP ${result.statusCode}${result.detail}` : result.message;
      if (retry >= this.client.retries) throw new UnavailableError(`${this.label}: blob ${digest}: ${reason}`);
      const delay = backoff(retry);
      retry++;
      this.log.warn(
        { blob: digest, registry: this.endpoint.host, attempt: retry, delay_ms: delay, received: result.outcome === 'broken' ? result.received : undefined, err: reason },
        'blob download failed; retrying',
      );
      await sleep(delay, undefined, { signal });
    }
  }

  private async url(suffix: string): Promise<string> {
    if (!this.baseUrl) {
      const scheme = await this.client.scheme(this.endpoint, (candidate) => this.ping(candidate));
      this.baseUrl = `${scheme}://${this.endpoint.host}/v2/${this.endpoint.path}/`;
    }
    return this.baseUrl + suffix;
  }

  /** GET /v2/ over one scheme; throws UnavailableError when the host does not speak it. */
  private async ping(scheme: 'https' | 'http'): Promise<void> {
    const agent = await this.client.agents.agentFor(this.endpoint.host, this.endpoint.insecure);
    try {
      const response = await httpRequest(`${scheme}://${this.endpoint.host}/v2/`, { method: 'GET', dispatcher: agent, headers: { 'user-agent': USER_AGENT } });
      discardBody(response);
    } catch (err) {
      throw new UnavailableError(`${this.endpoint.host}: ${scheme} request failed: ${errorMessage(err)}`);
    }
  }

  /**
   * Sends a GET with authentication, retries and redirects. On a 401 it reads the challenge,
   * obtains credentials for it and sends the request once more.
   */
  private async send(url: string, headers: Record<string, string>, signal?: AbortSignal, retry = true): Promise<Dispatcher.ResponseData> {
    let response = await this.sendWithRetries(url, headers, signal, retry);
    if (response.statusCode !== 401) return response;
    if (response.redirectedTo !== undefined) {
      discardBody(response);
      this.throwForeignChallenge(response.redirectedTo, `GET ${redactQuery(url)}`);
    }

    const header = headerValue(response.headers['www-authenticate']);
    discardBody(response);
    const hadCredentials = this.challenge !== undefined;
    this.acceptChallenge(header);

    response = await this.sendWithRetries(url, headers, signal, retry);
    if (response.statusCode === 401 && hadCredentials) this.log.debug({ registry: this.endpoint.host }, 'credentials rejected after a renewed challenge');
    return response;
  }

  /**
   * Rejects a 401 from a host the registry redirected to. Its challenge could name a token realm
   * of that host's choosing, and responding to it would send the registry's credentials there.
   */
  private throwForeignChallenge(origin: string, request: string): never {
    throw new RegistryAuthError(
      `${this.label}: ${request}: ${origin}, where the registry redirected the request, returned 401 Unauthorized; ` +
        "berth sends the registry's credentials only to the registry, so it does not respond to that challenge",
    );
  }

  /** Adopts the challenge of a 401 response for the next requests. Throws RegistryAuthError when it is unusable. */
  private acceptChallenge(header: string | undefined): void {
    const challenge = parseChallenge(header);
    if (!challenge) {
      throw new RegistryAuthError(`${this.label}: the registry answered 401 Unauthorized without a usable WWW-Authenticate challenge`);
    }
    this.challenge = challenge;
    if (challenge.scheme === 'bearer') this.forgetToken(challenge);
  }

  private async sendWithRetries(url: string, headers: Record<string, string>, signal: AbortSignal | undefined, retry: boolean): Promise<RedirectedResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await this.sendFollowingRedirects(url, headers, signal);
        if (response.statusCode >= 500) {
          const detail = await errorDetail(response);
          discardBody(response);
          throw new TransientError(`HTTP ${response.statusCode}${detail}`);
        }
        return response;
      } catch (err) {
        // Without `retry` the caller retries the whole download and converts the error itself.
        if (!(err instanceof TransientError) || !retry) throw err;
        if (attempt >= this.client.retries) throw asBerthError(err, `${this.label}: GET ${redactQuery(url)}`);
        const delay = backoff(attempt);
        this.log.warn({ registry: this.endpoint.host, url: redactQuery(url), attempt: attempt + 1, delay_ms: delay, err: errorMessage(err) }, 'registry request failed; retrying');
        await sleep(delay, undefined, { signal });
      }
    }
  }

  private sendFollowingRedirects(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<RedirectedResponse> {
    const policy = { label: this.label, insecure: this.endpoint.insecure, agents: this.client.agents, authorization: () => this.authorization(signal) };
    return getFollowingRedirects(url, headers, policy, signal);
  }

  private async checkStatus(response: Dispatcher.ResponseData, what: string): Promise<void> {
    if (response.statusCode >= 200 && response.statusCode < 300) return;
    const detail = await errorDetail(response);
    discardBody(response);
    this.throwForStatus(response.statusCode, detail, what);
  }

  private throwForStatus(statusCode: number, detail: string, what: string): never {
    if (statusCode === 401 || statusCode === 403) {
      const given = this.auth ? 'the credentials given were rejected' : 'no credentials were given';
      throw new RegistryAuthError(`${this.label}: ${what}: access denied (HTTP ${statusCode}${detail}); ${given}`);
    }
    throw new InvalidArgumentError(`${this.label}: ${what}: HTTP ${statusCode}${detail}`);
  }

  private async authorization(signal?: AbortSignal): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;

    if (challenge.scheme === 'basic') {
      const credentials = this.auth ? basicCredentials(this.auth) : undefined;
      if (!credentials) return undefined;
      return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
    }

    if (this.auth?.registryToken) return `Bearer ${this.auth.registryToken}`;
    const key = this.tokenKey(challenge);
    const cached = this.client.cachedToken(key);
    if (cached) return `Bearer ${cached}`;
    const { token, seconds } = await this.fetchToken(challenge, signal);
    this.client.storeToken(key, token, seconds);
    return `Bearer ${token}`;
  }

  private tokenKey(challenge: Challenge): string {
    const identity = this.auth ? createHash('sha256').update(JSON.stringify(this.auth)).digest('hex') : 'anonymous';
    return `${challenge.params.realm}|${challenge.params.service ?? ''}|${this.scope()}|${identity}`;
  }

  private forgetToken(challenge: Challenge): void {
    this.client.storeToken(this.tokenKey(challenge), '', -10);
  }

  private scope(): string {
    return `repository:${this.endpoint.path}:pull`;
  }

  /**
   * Obtains a bearer token from the challenge's realm: an OAuth2 refresh-token grant when an
   * identity token is set, else a GET with Basic credentials (or anonymous).
   */
  private async fetchToken(challenge: Challenge, signal?: AbortSignal): Promise<{ token: string; seconds: number }> {
    const realm = challenge.params.realm;
    if (!realm) throw new RegistryAuthError(`${this.label}: the Bearer challenge names no realm`);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new RegistryAuthError(`${this.label}: the Bearer challenge realm "${realm}" is not a URL`);
    }
    if (realmUrl.protocol !== 'https:' && !(realmUrl.protocol === 'http:' && this.endpoint.insecure)) {
      throw new RegistryAuthError(`${this.label}: token realm ${realmUrl.origin} is not HTTPS; only insecure registries may use a plain HTTP realm`);
    }

    const service = challenge.params.service;
    const scope = challenge.params.scope ?? this.scope();
    const dispatcher = await this.client.agents.agentFor(realmUrl.host, this.endpoint.insecure);
    const headers: Record<string, string> = { 'user-agent': USER_AGENT };
    let response: Dispatcher.ResponseData;
    try {
      if (this.auth?.identityToken) {
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: this.auth.identityToken, client_id: USER_AGENT, scope });
        if (service) form.set('service', service);
        headers['content-type'] = 'application/x-www-form-urlencoded';
        response = await httpRequest(realmUrl, { method: 'POST', headers, body: form.toString(), dispatcher, signal });
      } else {
        if (service) realmUrl.searchParams.set('service', service);
        realmUrl.searchParams.set('scope', scope);
        const credentials = this.auth ? basicCredentials(this.auth) : undefined;
        if (credentials) headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
        response = await httpRequest(realmUrl, { method: 'GET', headers, dispatcher, signal });
      }
    } catch (err) {
      throw new UnavailableError(`${this.label}: token request to ${realmUrl.origin}${realmUrl.pathname} failed: ${errorMessage(err)}`);
    }

    try {
      if (response.statusCode === 401 || response.statusCode === 403) {
        const given = this.auth ? 'the credentials given were rejected' : 'no credentials were given';
        throw new RegistryAuthError(`${this.label}: token server ${realmUrl.origin}${realmUrl.pathname} denied access (HTTP ${response.statusCode}); ${given}`);
      }
      if (response.statusCode !== 200) {
        throw new UnavailableError(`${this.label}: token server ${realmUrl.origin}${realmUrl.pathname} answered HTTP ${response.statusCode}`);
      }
      const body = JSON.parse((await readLimited(response.body, 1024 * 1024, 'token response')).toString('utf8')) as Record<string, unknown>;
      const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
      if (!token) throw new RegistryAuthError(`${this.label}: token server response has neither "token" nor "access_token"`);
      const seconds = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
      return { token, seconds };
    } catch (err) {
      if (err instanceof SyntaxError) throw new RegistryAuthError(`${this.label}: token server response is not JSON`);
      throw err;
    } finally {
      discardBody(response);
    }
  }
}

function asBerthError(err: unknown, what: string): unknown {
  if (err instanceof TransientError) return new UnavailableError(`${what}: ${err.message}`);
  return err;
}

function backoff(attempt: number): number {
  const base = Math.min(RETRY_BASE_MS * 2 ** attempt, RETRY_MAX_MS);
  return Math.round(base / 2 + Math.random() * (base / 2));
}

/** Parses `Basic realm="x"` or `Bearer realm="x",service="y",scope="z"`. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const match = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!match) return undefined;
  const scheme = match[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;

  const params: Record<string, string> = {};
  const pattern = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (const part of match[2]!.matchAll(pattern)) {
    params[part[1]!.toLowerCase()] = part[2] !== undefined ? part[2].replace(/\\(.)/g, '$1') : part[3] ?? '';
  }
  return { scheme, params };
}
