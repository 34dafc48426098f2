import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors.js';
import { formatReference, isImageId, parseReference, qualifyReference, withDefaultTag } from '../../src/image/reference.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;

test('reference normalisation table', () => {
  const cases: [string, string, boolean][] = [
    ['busybox', 'busybox', false],
    ['library/busybox:1.36', 'library/busybox:1.36', false],
    ['docker.io/busybox', 'docker.io/library/busybox', true],
    ['index.docker.io/library/busybox:latest', 'docker.io/library/busybox:latest', true],
    ['registry-1.docker.io/user/app', 'docker.io/user/app', true],
    ['localhost/app', 'localhost/app', true],
    ['localhost:5000/app:v1', 'localhost:5000/app:v1', true],
    ['127.0.0.1:5000/a/b/c:v1', '127.0.0.1:5000/a/b/c:v1', true],
    ['quay.io/org/app@' + DIGEST, 'quay.io/org/app@' + DIGEST, true],
    ['quay.io/org/app:v1@' + DIGEST, 'quay.io/org/app:v1@' + DIGEST, true],
    ['Registry.Example/app', 'Registry.Example/app', true],
    ['[::1]:5000/app', '[::1]:5000/app', true],
    ['a__b/c-d/e.f', 'a__b/c-d/e.f', false],
  ];
  for (const [input, expected, qualified] of cases) {
    const parsed = parseReference(input);
    assert.equal(formatReference(parsed.reference), expected, input);
    assert.equal(parsed.qualified, qualified, input);
  }
});

test('invalid references are rejected', () => {
  const cases: [string, RegExp][] = [
    ['', /is empty/],
    [' busybox', /white space/],
    ['Busybox', /lowercase/],
    ['busybox:', /tag ""/],
    ['busybox:-x', /tag "-x"/],
    ['busybox@sha256:abc', /not of the form|64 lowercase/],
    [`busybox@md5:${'a'.repeat(32)}`, /unsupported algorithm/],
    ['a//b', /repository path component ""/],
    ['host:99999999999999999999x/app', /registry host/],
    ['a'.repeat(64), /image ID/],
    [`example.com/${'a'.repeat(260)}`, /longer than 255/],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => parseReference(input), (err: unknown) => err instanceof InvalidArgumentError && message.test(err.message), input);
  }
});

test('qualify adds library for Docker Hub only', () => {
  const short = parseReference('busybox').reference;
  assert.equal(formatReference(qualifyReference(short, 'docker.io')), 'docker.io/library/busybox');
  assert.equal(formatReference(qualifyReference(short, 'quay.io')), 'quay.io/busybox');
  assert.equal(formatReference(qualifyReference(parseReference('org/app').reference, 'docker.io')), 'docker.io/org/app');
});

test('default tag only without tag or digest', () => {
  assert.equal(withDefaultTag(parseReference('busybox').reference).tag, 'latest');
  assert.equal(withDefaultTag(parseReference('busybox:1').reference).tag, '1');
  assert.equal(withDefaultTag(parseReference(`busybox@${DIGEST}`).reference).tag, undefined);
});

test('isImageId accepts sha256 hex only', () => {
  assert.equal(isImageId(DIGEST), true);
  assert.equal(isImageId('sha256:abc'), false);
  assert.equal(isImageId('a'.repeat(64)), false);
});
