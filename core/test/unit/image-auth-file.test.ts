import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors.js';
import { AuthFile, basicCredentials } from '../../src/image/auth-file.js';
import { parseChallenge } from '../../src/image/registry-client.js';

const encode = (text: string): string => Buffer.from(text).toString('base64');

test('auth file lookup prefers the longest key', () => {
  const file = AuthFile.parse(
    JSON.stringify({
      auths: {
        'registry.example': { auth: encode('host:pw1') },
        'registry.example/team': { auth: encode('team:pw2') },
        'registry.example/team/app': { identitytoken: 'refresh-token' },
        'https://index.docker.io/v1/': { auth: encode('hub:pw3') },
      },
    }),
    'auth.json',
  );
  assert.equal(file.lookup('registry.example', 'other/app')?.auth, encode('host:pw1'));
  assert.equal(file.lookup('registry.example', 'team/other')?.auth, encode('team:pw2'));
  assert.equal(file.lookup('registry.example', 'team/app')?.identityToken, 'refresh-token');
  assert.equal(file.lookup('docker.io', 'library/busybox')?.auth, encode('hub:pw3'));
  assert.equal(file.lookup('unknown.example', 'app'), undefined);
});

test('auth file errors never show secrets', () => {
  const cases: [string, RegExp][] = [
    ['{"auths": {"a": {"auth": 5}}}', /auths\."a"\.auth must be a string/],
    ['{"auths": []}', /"auths" must be an object/],
    ['{"auths": {"a": {"auth": "secret-value"', /not valid JSON/],
    ['[]', /must be a JSON object/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => AuthFile.parse(text, 'auth.json'), (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message) && !err.message.includes('secret-value'), text);
  }
});

test('basic credentials from auth or fields', () => {
  assert.deepEqual(basicCredentials({ auth: encode('user:pa:ss') }), { username: 'user', password: 'pa:ss' });
  assert.deepEqual(basicCredentials({ username: 'u', password: 'p', auth: encode('x:y') }), { username: 'u', password: 'p' });
  assert.equal(basicCredentials({ identityToken: 't' }), undefined);
  assert.throws(() => basicCredentials({ auth: encode('no-colon') }), InvalidArgumentError);
});

test('WWW-Authenticate challenges parse', () => {
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'), {
    scheme: 'bearer',
    params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' },
  });
  assert.deepEqual(parseChallenge('Basic realm="berth"'), { scheme: 'basic', params: { realm: 'berth' } });
  assert.deepEqual(parseChallenge('bearer realm=https://x/t, service=s'), { scheme: 'bearer', params: { realm: 'https://x/t', service: 's' } });
  assert.equal(parseChallenge('Negotiate abc'), undefined);
  assert.equal(parseChallenge(undefined), undefined);
});
