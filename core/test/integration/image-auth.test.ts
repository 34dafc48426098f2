import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { expectGrpcError, grpc } from '../support/cri-client.js';
import type { TestDaemon } from '../support/daemon.js';
import { insecureRegistries, startImageDaemon } from '../support/image-daemon.js';
import { busyboxImage, type BuiltImage } from '../support/images.js';
import { pushImage, startRegistry, type TestRegistry } from '../support/registry.js';

const PASSWORD = 'pull-secret-7f3a9c';
const WRONG_PASSWORD = 'wrong-secret-51be20';

/** Asserts that no daemon log line contains any of the secrets. */
function assertNoSecrets(daemon: TestDaemon, secrets: string[]): void {
  const output = daemon.output.join('');
  assert.ok(output.length > 0, 'the daemon wrote no log');
  for (const secret of secrets) assert.ok(!output.includes(secret), `the daemon log contains the secret ${secret}`);
}

describe('image pull with registry credentials', () => {
  let basic: TestRegistry;
  let token: TestRegistry;
  let daemon: TestDaemon;
  let image: BuiltImage;
  const encoded = Buffer.from(`berth:${PASSWORD}`).toString('base64');
  const wrongEncoded = Buffer.from(`berth:${WRONG_PASSWORD}`).toString('base64');

  before(async () => {
    basic = await startRegistry({ auth: 'basic', password: PASSWORD });
    token = await startRegistry({ auth: 'token', password: PASSWORD });
    image = await busyboxImage();
    await pushImage(basic, 'private/busybox', image, 'v1');
    await pushImage(token, 'private/busybox', image, 'v1');
    await pushImage(token, 'private/from-file', image, 'v1');

    daemon = await startImageDaemon({
      registries: insecureRegistries([basic.host, token.host]),
      authFile: { auths: { [`${token.host}/private/from-file`]: { auth: encoded } } },
    });
  });

  after(async () => {
    await daemon?.cleanup();
    await basic?.stop();
    await token?.stop();
  });

  test('Basic auth with username and password', async () => {
    const response = await daemon.client.image.PullImage({
      image: { image: `${basic.host}/private/busybox:v1` },
      auth: { username: 'berth', password: PASSWORD },
    });
    assert.equal(response.image_ref, image.configDigest);
  });

  test('Basic auth with the auth field', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const response = await daemon.client.image.PullImage({ image: { image: `${basic.host}/private/busybox:v1` }, auth: { auth: encoded } });
    assert.equal(response.image_ref, image.configDigest);
  });

  test('Basic auth with bad credentials', async () => {
    const err = await expectGrpcError(
      daemon.client.image.PullImage({ image: { image: `${basic.host}/private/busybox:v1` }, auth: { username: 'berth', password: WRONG_PASSWORD } }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /access denied \(HTTP 401.*\); the credentials given were rejected/);
  });

  test('Basic auth without credentials', async () => {
    const err = await expectGrpcError(daemon.client.image.PullImage({ image: { image: `${basic.host}/private/busybox:v1` } }));
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /no credentials were given/);
  });

  test('Bearer token flow', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const response = await daemon.client.image.PullImage({
      image: { image: `${token.host}/private/busybox:v1` },
      auth: { username: 'berth', password: PASSWORD, server_address: token.host },
    });
    assert.equal(response.image_ref, image.configDigest);

    const requests = token.tokenServer!.requests.filter((request) => request.scope === 'repository:private/busybox:pull');
    assert.ok(requests.some((request) => request.granted && request.account === 'berth'));
  });

  test('Bearer token with bad credentials', async () => {
    const err = await expectGrpcError(
      daemon.client.image.PullImage({ image: { image: `${token.host}/private/busybox:v1` }, auth: { auth: wrongEncoded } }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /token server http:\/\/127\.0\.0\.1:\d+\/token denied access \(HTTP 401\); the credentials given were rejected/);
  });

  test('registry_token is sent as the bearer', async () => {
    const issued = await fetch(`${token.tokenServer!.realm}?service=${token.tokenServer!.service}&scope=repository:private/busybox:pull`, {
      headers: { authorization: `Basic ${encoded}` },
    });
    const body = (await issued.json()) as { token: string };
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });

    const before = token.tokenServer!.requests.length;
    const response = await daemon.client.image.PullImage({ image: { image: `${token.host}/private/busybox:v1` }, auth: { registry_token: body.token } });
    assert.equal(response.image_ref, image.configDigest);
    assert.equal(token.tokenServer!.requests.length, before);
  });

  test('identity_token is exchanged for a token', async () => {
    const refreshToken = 'refresh-token-0c9d41';
    token.tokenServer!.refreshTokens.set(refreshToken, 'berth');
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });

    const before = token.tokenServer!.requests.length;
    const response = await daemon.client.image.PullImage({ image: { image: `${token.host}/private/busybox:v1` }, auth: { identity_token: refreshToken } });
    assert.equal(response.image_ref, image.configDigest);
    const exchanges = token.tokenServer!.requests.slice(before);
    assert.ok(exchanges.length > 0, 'no token request reached the token server');
    for (const exchange of exchanges) {
      assert.equal(exchange.grantType, 'refresh_token');
      assert.equal(exchange.clientId, 'berth');
      assert.equal(exchange.account, 'berth');
      assert.equal(exchange.scope, 'repository:private/busybox:pull');
    }

    const err = await expectGrpcError(
      daemon.client.image.PullImage({ image: { image: `${token.host}/private/from-file:v1` }, auth: { identity_token: 'refresh-token-unknown' } }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    assert.match(err.details, /denied access \(HTTP 401\); the credentials given were rejected/);
    assertNoSecrets(daemon, [refreshToken, 'refresh-token-unknown']);
  });

  test('auth file credentials', async () => {
    await daemon.client.image.RemoveImage({ image: { image: image.configDigest } });
    const response = await daemon.client.image.PullImage({ image: { image: `${token.host}/private/from-file:v1` } });
    assert.equal(response.image_ref, image.configDigest);
  });

  test('credentials for another server are not sent', async () => {
    const err = await expectGrpcError(
      daemon.client.image.PullImage({
        image: { image: `${basic.host}/private/busybox:v1` },
        auth: { username: 'berth', password: PASSWORD, server_address: 'other.example:5000' },
      }),
    );
    assert.equal(err.code, grpc.status.PERMISSION_DENIED);
  });

  test('credentials never reach the log', async () => {
    assertNoSecrets(daemon, [PASSWORD, WRONG_PASSWORD, encoded, wrongEncoded]);
    const records = daemon.logRecords();
    assert.ok(records.some((record) => record.msg === 'image pulled'), 'expected pull log records');
  });
});
