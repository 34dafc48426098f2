import { spawn, type ChildProcess } from 'node:child_process';
import { createSign, randomUUID, X509Certificate } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { Agent, fetch as undiciFetch } from 'undici';
import type { BuiltImage, BuiltIndex } from './images.js';

export const DOCKER_REGISTRY = '/usr/bin/docker-registry';

export type RegistryAuthMode = 'none' | 'basic' | 'token';

export interface RegistryOptions {
  /** `basic`: htpasswd users; `token`: a token server issuing JWTs for the users. Default `none`. */
  auth?: RegistryAuthMode;
  username?: string;
  password?: string;
  /** Serve HTTPS with a certificate for 127.0.0.1 from a CA of the test's own (`caFile`). */
  tls?: boolean;
}

/**
 * A docker-registry process on 127.0.0.1 with a free port, its config and storage in a temp dir.
 * Stop it with `stop()` (it also removes the temp dir).
 */
export interface TestRegistry {
  /** `127.0.0.1:<port>`: the registry host for image names. */
  host: string;
  url: string;
  auth: RegistryAuthMode;
  username?: string;
  password?: string;
  /** Present with `auth: 'token'`. */
  tokenServer?: TokenServer;
  /** The registry's stdout and stderr, access log included. */
  output: string[];
  /** PEM file of the CA that signed the registry's certificate; present with `tls`. */
  caFile?: string;
  stop(): Promise<void>;
}

/** Fetches from the registry, trusting its test CA when it serves HTTPS. */
async function registryFetch(registry: TestRegistry, url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<Response> {
  if (!registry.caFile) return fetch(url, init);
  const dispatcher = new Agent({ connect: { ca: await readFile(registry.caFile, 'utf8') } });
  try {
    const response = await undiciFetch(url, { ...init, dispatcher });
    const body = Buffer.from(await response.arrayBuffer());
    return new Response(response.status === 204 || response.status === 304 || init.method === 'HEAD' ? null : body, { status: response.status, headers: new Headers([...response.headers]) });
  } finally {
    await dispatcher.close();
  }
}

/** Writes a CA and a certificate for IP 127.0.0.1 that it signed; returns the file paths. */
async function makeServerCertificate(dir: string): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  const caFile = path.join(dir, 'ca.crt');
  const caKey = path.join(dir, 'ca.key');
  const certFile = path.join(dir, 'server.crt');
  const keyFile = path.join(dir, 'server.key');
  const csrFile = path.join(dir, 'server.csr');
  const extFile = path.join(dir, 'server.ext');
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', caFile, '-days', '2', '-subj', '/CN=berth-test-ca']);
  await execa('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', csrFile, '-subj', '/CN=127.0.0.1']);
  await writeFile(extFile, 'subjectAltName = IP:127.0.0.1\n');
  await execa('openssl', ['x509', '-req', '-in', csrFile, '-CA', caFile, '-CAkey', caKey, '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', extFile]);
  return { caFile, certFile, keyFile };
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts a docker-registry and waits until `/v2/` responds. */
export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = options.auth ?? 'none';
  const username = options.username ?? 'berth';
  const password = options.password ?? 'secret-registry-password';
  const dir = await mkdtemp(path.join(os.tmpdir(), 'berth-registry-'));
  const port = await freePort();
  let tokenServer: TokenServer | undefined;

  try {
    let authConfig = '';
    if (auth === 'basic') {
      await execa('htpasswd', ['-Bbc', path.join(dir, 'htpasswd'), username, password]);
      authConfig = `auth:\n  htpasswd:\n    realm: berth-test\n    path: ${path.join(dir, 'htpasswd')}\n`;
    }
    if (auth === 'token') {
      tokenServer = await TokenServer.start(dir, { [username]: password });
      authConfig = [
        'auth:',
        '  token:',
        `    realm: ${tokenServer.realm}`,
        `    service: ${tokenServer.service}`,
        `    issuer: ${tokenServer.issuer}`,
        `    rootcertbundle: ${tokenServer.certFile}`,
        '',
      ].join('\n');
    }

    const certificate = options.tls ? await makeServerCertificate(dir) : undefined;
    const tlsConfig = certificate ? `  tls:\n    certificate: ${certificate.certFile}\n    key: ${certificate.keyFile}\n` : '';

    const config = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  formatter: text',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '  secret: berth-test-secret',
      tlsConfig,
      authConfig,
    ].join('\n');
    await writeFile(path.join(dir, 'config.yml'), config);

    const child = spawn(DOCKER_REGISTRY, ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    const host = `127.0.0.1:${port}`;
    const registry: TestRegistry = {
      host,
      url: `${certificate ? 'https' : 'http'}://${host}`,
      auth,
      output,
      ...(certificate ? { caFile: certificate.caFile } : {}),
      ...(auth !== 'none' ? { username, password } : {}),
      ...(tokenServer ? { tokenServer } : {}),
      stop: async () => {
        await stopChild(child);
        await tokenServer?.close();
        await rm(dir, { recursive: true, force: true });
      },
    };

    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`docker-registry exited with code ${child.exitCode}:\n${output.join('')}`);
      try {
        const response = await registryFetch(registry, `${registry.url}/v2/`);
        if (response.status === 200 || response.status === 401) return registry;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        await registry.stop();
        throw new Error(`docker-registry did not answer on ${host} within 20 s:\n${output.join('')}`);
      }
      await sleep(50);
    }
  } catch (err) {
    await tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/**
 * A token server for the registry's token authentication: it checks Basic credentials and issues
 * RS256 JWTs signed by a self-signed certificate that the registry trusts (`rootcertbundle`).
 */
export class TokenServer {
  readonly service = 'berth-test-registry';
  readonly issuer = 'berth-test-issuer';
  /** Token requests received, with the scope and whether credentials were accepted. */
  readonly requests: { scope: string; account: string; granted: boolean; grantType?: string; clientId?: string }[] = [];
  /** OAuth2 refresh tokens accepted in a POST with grant_type=refresh_token, each mapped to its account. */
  readonly refreshTokens = new Map<string, string>();

  private constructor(
    private readonly server: http.Server,
    readonly realm: string,
    readonly certFile: string,
    private readonly keyPem: string,
    private readonly certDer: Buffer,
    private readonly users: Record<string, string>,
  ) {}

  static async start(dir: string, users: Record<string, string>): Promise<TokenServer> {
    const keyFile = path.join(dir, 'token.key');
    const certFile = path.join(dir, 'token.crt');
    await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=berth-test-token']);
    const keyPem = await readFile(keyFile, 'utf8');
    const certDer = Buffer.from(new X509Certificate(await readFile(certFile)).raw);

    let self: TokenServer | undefined;
    const server = http.createServer((request, response) => self!.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    self = new TokenServer(server, `http://127.0.0.1:${port}/token`, certFile, keyPem, certDer, users);
    return self;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    if (request.method === 'POST') {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        const grantType = form.get('grant_type') ?? '';
        const account = grantType === 'refresh_token' ? this.refreshTokens.get(form.get('refresh_token') ?? '') ?? '' : '';
        this.grant(response, form.get('scope') ?? '', account, { grantType, clientId: form.get('client_id') ?? '' });
      });
      return;
    }

    const url = new URL(request.url ?? '/', this.realm);
    const scope = url.searchParams.get('scope') ?? '';
    const header = request.headers.authorization ?? '';
    let account = '';
    if (header.startsWith('Basic ')) {
      const decoded = Buffer.from(header.slice(6), 'base64').toString();
      const colon = decoded.indexOf(':');
      const user = decoded.slice(0, colon);
      if (this.users[user] !== undefined && this.users[user] === decoded.slice(colon + 1)) account = user;
    }
    this.grant(response, scope, account);
  }

  /** Sends 401 without an account, else a JWT for the scope, named access_token for OAuth2 requests as OAuth2 servers name it. */
  private grant(response: http.ServerResponse, scope: string, account: string, oauth?: { grantType: string; clientId: string }): void {
    const granted = account !== '';
    this.requests.push({ scope, account, granted, ...oauth });
    if (!granted) {
      response.writeHead(401, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }));
      return;
    }

    const access = scope
      .split(' ')
      .filter(Boolean)
      .map((item) => {
        const [type, name, actions] = item.split(':');
        return { type, name, actions: (actions ?? '').split(',') };
      });
    const now = Math.floor(Date.now() / 1000);
    const token = this.sign({ iss: this.issuer, sub: account, aud: this.service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access });
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(oauth ? { access_token: token, expires_in: 300 } : { token, expires_in: 300 }));
  }

  private sign(claims: Record<string, unknown>): string {
    const header = { typ: 'JWT', alg: 'RS256', x5c: [this.certDer.toString('base64')] };
    const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${encode(header)}.${encode(claims)}`;
    const signature = createSign('RSA-SHA256').update(unsigned).sign(this.keyPem).toString('base64url');
    return `${unsigned}.${signature}`;
  }
}

/** Credentials for pushing to a registry started with auth. */
function pushCredentials(registry: TestRegistry): string | undefined {
  if (!registry.username) return undefined;
  return Buffer.from(`${registry.username}:${registry.password}`).toString('base64');
}

/**
 * Pushes an image or index to `registry` as `repository:tag` (its blobs and, for an index, each
 * platform manifest by digest). Returns the digest of the pushed manifest or index.
 */
export async function pushImage(registry: TestRegistry, repository: string, image: BuiltImage | BuiltIndex, tag = 'latest'): Promise<string> {
  const client = new PushClient(registry, repository);
  const images = image.kind === 'index' ? image.images : [image];
  for (const item of images) {
    for (const layer of item.layers) await client.pushBlob(layer.digest, layer.blob);
    await client.pushBlob(item.configDigest, item.config);
    if (image.kind === 'index') await client.pushManifest(item.digest, item.manifest, item.mediaType);
  }
  await client.pushManifest(tag, image.manifest, image.mediaType);
  return image.digest;
}

/** A minimal push client with Basic and Bearer authentication, for test set-up only. */
class PushClient {
  private authorization?: string;

  constructor(
    private readonly registry: TestRegistry,
    private readonly repository: string,
  ) {}

  async pushBlob(digest: string, data: Buffer): Promise<void> {
    const head = await this.send('HEAD', `/v2/${this.repository}/blobs/${digest}`);
    if (head.status === 200) return;

    const start = await this.send('POST', `/v2/${this.repository}/blobs/uploads/`);
    if (start.status !== 202) throw new Error(`push ${digest}: upload start answered ${start.status}: ${await start.text()}`);
    const location = new URL(start.headers.get('location') ?? '', this.registry.url);
    location.searchParams.set('digest', digest);
    const put = await this.send('PUT', location.pathname + location.search, data, 'application/octet-stream');
    if (put.status !== 201) throw new Error(`push ${digest}: upload answered ${put.status}: ${await put.text()}`);
  }

  async pushManifest(reference: string, manifest: Buffer, mediaType: string): Promise<void> {
    const put = await this.send('PUT', `/v2/${this.repository}/manifests/${reference}`, manifest, mediaType);
    if (put.status !== 201) throw new Error(`push manifest ${reference}: answered ${put.status}: ${await put.text()}`);
  }

  private async send(method: string, pathAndQuery: string, body?: Buffer, contentType?: string): Promise<Response> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers: Record<string, string> = {};
      if (contentType) headers['content-type'] = contentType;
      if (this.authorization) headers.authorization = this.authorization;
      const response = await registryFetch(this.registry, `${this.registry.url}${pathAndQuery}`, { method, headers, ...(body ? { body } : {}) });
      if (response.status !== 401 || attempt > 0) return response;
      await response.arrayBuffer();
      await this.authenticate(response.headers.get('www-authenticate') ?? '');
    }
    throw new Error('unreachable');
  }

  private async authenticate(challenge: string): Promise<void> {
    const basic = pushCredentials(this.registry);
    if (!basic) throw new Error(`registry ${this.registry.host} asks for credentials but none are configured`);
    if (challenge.toLowerCase().startsWith('basic')) {
      this.authorization = `Basic ${basic}`;
      return;
    }
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((match) => [match[1], match[2]]));
    const url = new URL(params.realm ?? '');
    url.searchParams.set('service', params.service ?? '');
    url.searchParams.set('scope', `repository:${this.repository}:pull,push`);
    const response = await fetch(url, { headers: { authorization: `Basic ${basic}` } });
    if (response.status !== 200) throw new Error(`token request for push answered ${response.status}`);
    const body = (await response.json()) as { token: string };
    this.authorization = `Bearer ${body.token}`;
  }
}

export interface ProxiedRequest {
  method: string;
  path: string;
  status: number;
  /** Date.now() when the proxy received the request. */
  receivedAt: number;
  /** The Accept header the client sent, if any. */
  accept?: string;
  /** The Range header the client sent, if any (before `stripRange` removed it). */
  range?: string;
}

export interface CountingProxyOptions {
  /** Bytes per second for each response body; unlimited when unset. */
  bytesPerSecond?: number;
  /** Drop Range headers, so the registry answers as one that does not support them (200, whole body). */
  stripRange?: boolean;
}

/**
 * An HTTP proxy on 127.0.0.1 in front of a registry that records every request, can slow response
 * bodies down and can fail the next requests with an error status.
 */
export class CountingProxy {
  readonly requests: ProxiedRequest[] = [];
  private failures: { count: number; status: number; match: RegExp } = { count: 0, status: 503, match: /./ };
  private resets: { count: number; match: string } = { count: 0, match: '' };
  private corruptions: { count: number; match: string } = { count: 0, match: '' };

  private constructor(
    private readonly server: http.Server,
    readonly host: string,
    private readonly target: string,
    private readonly options: CountingProxyOptions,
  ) {}

  static async start(targetHost: string, options: CountingProxyOptions = {}): Promise<CountingProxy> {
    let self: CountingProxy | undefined;
    const server = http.createServer((request, response) => self!.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    self = new CountingProxy(server, `127.0.0.1:${port}`, targetHost, options);
    return self;
  }

  /** GET requests for the blob `digest` (or for any blob) that reached the registry. */
  blobDownloads(digest?: string): number {
    return this.requests.filter((request) => request.method === 'GET' && request.path.includes('/blobs/') && (digest === undefined || request.path.endsWith(digest))).length;
  }

  /** Fails the next `count` requests whose path matches `match` with `status`, without forwarding them. */
  failNext(count: number, status = 503, match = /./): void {
    this.failures = { count, status, match };
  }

  /** Drops the connection of the next `count` downloads of blobs whose path contains `match`, halfway through the body. */
  resetNextBlobs(count: number, match = ''): void {
    this.resets = { count, match };
  }

  /** Flips one byte in the middle of the next `count` blob bodies whose path contains `match`. */
  corruptNextBlobs(count: number, match = ''): void {
    this.corruptions = { count, match };
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const requestPath = request.url ?? '/';
    const method = request.method ?? 'GET';
    const receivedAt = Date.now();
    const accept = typeof request.headers.accept === 'string' ? request.headers.accept : undefined;
    if (this.failures.count > 0 && this.failures.match.test(requestPath)) {
      this.failures.count--;
      this.requests.push({ method, path: requestPath, status: this.failures.status, receivedAt, ...(accept !== undefined ? { accept } : {}) });
      response.writeHead(this.failures.status, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected by the test proxy' }] }));
      return;
    }

    const [hostname, port] = this.target.split(':');
    const range = typeof request.headers.range === 'string' ? request.headers.range : undefined;
    const headers = { ...request.headers, host: this.target };
    if (this.options.stripRange) delete headers.range;
    const upstream = http.request({ hostname, port: Number(port), method, path: requestPath, headers }, (reply) => {
      this.requests.push({ method, path: requestPath, status: reply.statusCode ?? 0, receivedAt, ...(accept !== undefined ? { accept } : {}), ...(range !== undefined ? { range } : {}) });
      response.writeHead(reply.statusCode ?? 502, reply.headers);
      const isBlob = method === 'GET' && requestPath.includes('/blobs/sha256:') && (reply.statusCode === 200 || reply.statusCode === 206);
      const reset = isBlob && this.resets.count > 0 && requestPath.includes(this.resets.match);
      if (reset) this.resets.count--;
      const corrupt = isBlob && this.corruptions.count > 0 && requestPath.includes(this.corruptions.match);
      if (corrupt) this.corruptions.count--;
      const length = Number(reply.headers['content-length'] ?? 0);
      const cutAt = reset ? Math.floor(length / 2) : undefined;
      const flipAt = corrupt ? Math.floor(length / 2) : undefined;
      pipeline(reply, this.shaper(cutAt, flipAt, response), response).catch(() => response.destroy());
    });
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  }

  /**
   * Slows the body to the configured rate. With `cutAt` it destroys the connection after that many
   * bytes, and with `flipAt` it inverts the byte at that offset.
   */
  private shaper(cutAt: number | undefined, flipAt: number | undefined, response: http.ServerResponse): Transform {
    const rate = this.options.bytesPerSecond;
    let sent = 0;
    return new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        if (flipAt !== undefined && flipAt >= sent && flipAt < sent + chunk.length) {
          chunk = Buffer.from(chunk);
          chunk[flipAt - sent] = chunk[flipAt - sent]! ^ 0xff;
        }
        sent += chunk.length;
        if (cutAt !== undefined && sent > cutAt) {
          response.socket?.destroy();
          callback(new Error('connection reset by the test proxy'));
          return;
        }
        if (!rate) {
          callback(null, chunk);
          return;
        }
        setTimeout(() => callback(null, chunk), Math.ceil((chunk.length / rate) * 1000));
      },
    });
  }
}
