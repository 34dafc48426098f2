import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import type { TestDaemon } from '../support/daemon.js';
import { insecureRegistries, startImageDaemon } from '../support/image-daemon.js';
import { busyboxImage, type BuiltImage } from '../support/images.js';
import { pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

const PASSWORD = 'primary-secret-3c81d2';
const MIRROR_PASSWORD = 'mirror-secret-9a04be';
const primaryBasic = `Basic ${Buffer.from(`berth:${PASSWORD}`).toString('base64')}`;
const mirrorBasic = `Basic ${Buffer.from(`mirror-user:${MIRROR_PASSWORD}`).toString('base64')}`;

interface RecordedRequest {
  method: string;
  path: string;
  authorization?: string;
}

/** An HTTP server on 127.0.0.1 that records each request and its Authorization header. */
class RecordingServer {
  readonly requests: RecordedRequest[] = [];

  private constructor(
    private readonly server: http.Server,
    readonly host: string,
  ) {}

  static async start(handler: (request: http.IncomingMessage, response: http.ServerResponse) => void): Promise<RecordingServer> {
    let self: RecordingServer | undefined;
    const server = http.createServer((request, response) => {
      const authorization = request.headers.authorization;
      self!.requests.push({ method: request.method ?? 'GET', path: request.url ?? '/', ...(authorization !== undefined ? { authorization } : {}) });
      handler(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new RecordingServer(server, `127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    return self;
  }

  /** Authorization headers received, in order. */
  authorizations(): string[] {
    return this.requests.flatMap((request) => (request.authorization === undefined ? [] : [request.authorization]));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function sendRegistryError(response: http.ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify({ errors: [{ code, message: 'sent by the test server' }] }));
}

describe('registry credentials stay with their registry', () => {
  let primary: TestRegistry;
  let mirror: RecordingServer;
  let daemon: TestDaemon;
  let image: BuiltImage;

  before(async () => {
    primary = await startRegistry({ auth: 'basic', password: PASSWORD });
    image = await busyboxImage();
    await pushImage(primary, 'private/busybox', image, 'v1');

    // The mirror requires Basic credentials and, given its own, reports every manifest unknown,
    // so each pull falls through to the primary.
    mirror = await RecordingServer.start((request, response) => {
      if (request.headers.authorization !== mirrorBasic) {
        sendRegistryError(response, 401, 'UNAUTHORIZED', { 'www-authenticate': 'Basic realm="mirror"' });
        return;
      }
      sendRegistryError(response, 404, 'MANIFEST_UNKNOWN');
    });

    daemon = await startImageDaemon({
      registries: {
        'unqualified-search-registries': [],
        registry: [{ prefix: primary.host, location: primary.host, insecure: true, mirror: [{ location: mirror.host, insecure: true }] }],
      },
      authFile: { auths: { [mirror.host]: { auth: Buffer.from(`mirror-user:${MIRROR_PASSWORD}`).toString('base64') } } },
      image: { pull_retries: 0 },
    });
  });

  after(async () => {
    await daemon?.cleanup();
    await primary?.stop();
    await mirror?.close();
  });

  test('mirror gets no request credentials', async () => {
    for (const auth of [{ username: 'berth', password: PASSWORD }, { username: 'berth', password: PASSWORD, server_address: primary.host }]) {
      await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
      const seen = mirror.requests.length;

      const response = await daemon.client.image.PullImage({ image: { image: `${primary.host}/private/busybox:v1` }, auth });
      assert.equal(response.image_ref, image.configDigest);

      const mirrorAuthorizations = mirror.requests.slice(seen).flatMap((request) => request.authorization ?? []);
      assert.ok(mirror.requests.length > seen, 'the pull did not try the mirror');
      assert.ok(!mirrorAuthorizations.includes(primaryBasic), `the mirror received the primary's credentials (server_address ${auth.server_address ?? 'unset'})`);
    }
  });

  test('mirror gets its own auth file entry', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const seen = mirror.requests.length;

    const response = await daemon.client.image.PullImage({ image: { image: `${primary.host}/private/busybox:v1` }, auth: { username: 'berth', password: PASSWORD } });
    assert.equal(response.image_ref, image.configDigest);

    const mirrorAuthorizations = mirror.requests.slice(seen).flatMap((request) => request.authorization ?? []);
    assert.ok(mirrorAuthorizations.includes(mirrorBasic), `the mirror received ${JSON.stringify(mirrorAuthorizations)}`);
  });

  test('mirror credentials in the request reach the mirror', async () => {
    const seen = mirror.requests.length;
    const err = await expectGrpcError(
      daemon.client.image.PullImage({
        image: { image: `${primary.host}/private/busybox:v1` },
        auth: { username: 'mirror-user', password: MIRROR_PASSWORD, server_address: mirror.host },
      }),
    );
    // The primary gets no credentials (none in the auth file, the request's are the mirror's).
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    const mirrorAuthorizations = mirror.requests.slice(seen).flatMap((request) => request.authorization ?? []);
    assert.ok(mirrorAuthorizations.includes(mirrorBasic));
  });
});

describe('registry credentials and redirects', () => {
  let registry: TestRegistry;
  let front: http.Server;
  let frontHost: string;
  let storage: RecordingServer;
  let realm: RecordingServer;
  let daemon: TestDaemon;
  let image: BuiltImage;
  /** Digests of blobs for which the storage host returns 401 and a Bearer challenge naming `realm`. */
  const challenged = new Set<string>();

  before(async () => {
    registry = await startRegistry({ auth: 'basic', password: PASSWORD });
    image = await busyboxImage();
    await pushImage(registry, 'private/busybox', image, 'v1');
    const blobs = new Map<string, Buffer>([[image.configDigest, image.config], ...image.layers.map((layer) => [layer.digest, layer.blob] as [string, Buffer])]);

    realm = await RecordingServer.start((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ token: 'token-from-the-storage-realm' }));
    });

    // The storage host serves blobs as a CDN behind a registry redirect does, or returns a 401 challenge.
    storage = await RecordingServer.start((request, response) => {
      const digest = new URL(request.url ?? '/', 'http://storage').searchParams.get('digest') ?? '';
      if (challenged.has(digest)) {
        sendRegistryError(response, 401, 'UNAUTHORIZED', { 'www-authenticate': `Bearer realm="http://${realm.host}/token",service="storage"` });
        return;
      }
      const blob = blobs.get(digest);
      if (!blob) {
        sendRegistryError(response, 404, 'BLOB_UNKNOWN');
        return;
      }
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      response.end(blob);
    });

    // The front is the registry the daemon pulls from: it passes everything to the real registry
    // but redirects authenticated blob GETs to the storage host.
    front = http.createServer((request, response) => {
      const requestPath = request.url ?? '/';
      const blob = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(requestPath);
      if (request.method === 'GET' && blob && request.headers.authorization === primaryBasic) {
        response.writeHead(307, { location: `http://${storage.host}/blob?digest=${blob[1]}&signature=test` });
        response.end();
        return;
      }
      const [hostname, port] = registry.host.split(':');
      const upstream = http.request({ hostname, port: Number(port), method: request.method, path: requestPath, headers: { ...request.headers, host: registry.host } }, (reply) => {
        response.writeHead(reply.statusCode ?? 502, reply.headers);
        reply.pipe(response);
      });
      upstream.on('error', () => response.destroy());
      request.pipe(upstream);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    frontHost = `127.0.0.1:${(front.address() as net.AddressInfo).port}`;

    daemon = await startImageDaemon({ registries: insecureRegistries([frontHost]), image: { pull_retries: 0 } });
  });

  after(async () => {
    await daemon?.cleanup();
    front?.closeAllConnections();
    await new Promise<void>((resolve) => (front ? front.close(() => resolve()) : resolve()));
    await storage?.close();
    await realm?.close();
    await registry?.stop();
  });

  const pull = () =>
    daemon.client.image.PullImage({ image: { image: `${frontHost}/private/busybox:v1` }, auth: { username: 'berth', password: PASSWORD, server_address: frontHost } });

  test('redirected blobs arrive without credentials', async () => {
    const response = await pull();
    assert.equal(response.image_ref, image.configDigest);

    const blobRequests = storage.requests.filter((request) => request.path.startsWith('/blob?'));
    assert.ok(blobRequests.length >= 1 + image.layers.length, `storage served ${blobRequests.length} blobs`);
    assert.deepEqual(storage.authorizations(), []);
  });

  test('challenge from redirect target is not answered', async () => {
    // The config blob is fetched by the daemon, the layers by an image worker process: both paths.
    for (const digest of [image.configDigest, image.layers[0]!.digest]) {
      await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
      challenged.clear();
      challenged.add(digest);

      const err = await expectGrpcError(pull());
      assert.equal(err.code, grpc.status.PERMISSION_DENIED, err.details);
      assert.match(err.details, new RegExp(`http://${storage.host.replace(/\./g, '\\.')}, where the registry redirected the request, returned 401`));
      assert.deepEqual(realm.requests, [], `the daemon asked the storage host's realm for a token (blob ${digest})`);
      assert.deepEqual(storage.authorizations(), []);
    }
    challenged.clear();
  });
});
