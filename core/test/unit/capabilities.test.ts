import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALL_CAPABILITIES, normalizeCapability, resolveCapabilities } from '../../src/container/capabilities.js';

const defaults = ['CHOWN', 'KILL', 'NET_RAW'];

test('names normalise to the CAP_ form', () => {
  assert.equal(normalizeCapability('net_admin', 'f'), 'CAP_NET_ADMIN');
  assert.equal(normalizeCapability('CAP_SYS_TIME', 'f'), 'CAP_SYS_TIME');
  assert.equal(normalizeCapability('all', 'f'), 'ALL');
  assert.throws(() => normalizeCapability('FLY', 'capabilities.add_capabilities[0]'), /capabilities\.add_capabilities\[0\]: unknown capability "FLY"/);
});

test('drop and add apply to defaults', () => {
  assert.deepEqual(resolveCapabilities(defaults, ['NET_ADMIN'], ['NET_RAW'], false), ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_ADMIN']);
});

test('drop ALL keeps only adds', () => {
  assert.deepEqual(resolveCapabilities(defaults, ['KILL'], ['ALL'], false), ['CAP_KILL']);
  assert.deepEqual(resolveCapabilities(defaults, [], ['ALL'], false), []);
});

test('add ALL and privileged grant everything', () => {
  assert.deepEqual(resolveCapabilities(defaults, ['ALL'], ['KILL'], false), ALL_CAPABILITIES);
  assert.deepEqual(resolveCapabilities(defaults, [], ['ALL'], true), ALL_CAPABILITIES);
});
