import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { PodNetworkRequest } from '@berth/core';
import { bandwidthFromAnnotations, buildCapabilityArgs, buildCniArgs } from '../src/runtime-config.js';
import { pluginConfig, unusedCapabilities } from '../src/chain.js';
import { LogCapture } from './support/harness.js';
import type { NetworkConfList } from '../src/spec.js';

function request(overrides: Partial<PodNetworkRequest> = {}): PodNetworkRequest {
  return {
    sandboxId: 'abc123',
    podName: 'web',
    podNamespace: 'shop',
    podUid: 'uid-1',
    netnsPath: '/run/netns/x',
    portMappings: [],
    annotations: {},
    log: new LogCapture().logger,
    ...overrides,
  };
}

describe('buildCniArgs', () => {
  it('carries the pod identity', () => {
    assert.equal(
      buildCniArgs(request()),
      'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1',
    );
  });

  it('rejects separators in values', () => {
    assert.throws(() => buildCniArgs(request({ podName: 'a;b' })), /K8S_POD_NAME value "a;b" must not contain ";" or "="/);
    assert.throws(() => buildCniArgs(request({ podUid: 'x=y' })), /K8S_POD_UID value "x=y"/);
  });
});

describe('buildCapabilityArgs', () => {
  it('is empty for a plain pod', () => {
    assert.deepEqual(buildCapabilityArgs(request()), {});
  });

  it('keeps only mappings with a host port', () => {
    const args = buildCapabilityArgs(request({
      portMappings: [
        { protocol: 'tcp', containerPort: 80, hostPort: 8080, hostIp: '' },
        { protocol: 'sctp', containerPort: 9, hostPort: 9009, hostIp: '::1' },
        { protocol: 'udp', containerPort: 53, hostPort: 0, hostIp: '' },
      ],
    }));
    assert.deepEqual(args.portMappings, [
      { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
      { hostPort: 9009, containerPort: 9, protocol: 'sctp', hostIP: '::1' },
    ]);
  });

  it('passes DNS only when it has content', () => {
    assert.equal(buildCapabilityArgs(request({ dns: { servers: [], searches: [], options: [] } })).dns, undefined);
    assert.deepEqual(buildCapabilityArgs(request({ dns: { servers: ['1.1.1.1'], searches: [], options: [] } })).dns, {
      servers: ['1.1.1.1'],
      searches: [],
      options: [],
    });
  });
});

describe('bandwidthFromAnnotations', () => {
  it('converts rates and derives bursts', () => {
    assert.deepEqual(bandwidthFromAnnotations('s', { 'kubernetes.io/ingress-bandwidth': '10M', 'kubernetes.io/egress-bandwidth': '1k' }), {
      ingressRate: 10_000_000,
      ingressBurst: 1_000_000,
      egressRate: 1000,
      egressBurst: 524_288,
    });
  });

  it('caps the burst below the plugin limit', () => {
    assert.equal(bandwidthFromAnnotations('s', { 'kubernetes.io/ingress-bandwidth': '1P' })?.ingressBurst, 2 ** 34);
  });

  it('returns undefined without annotations', () => {
    assert.equal(bandwidthFromAnnotations('s', { other: '1' }), undefined);
  });

  it('rejects values that are not quantities or out of range', () => {
    assert.throws(
      () => bandwidthFromAnnotations('s1', { 'kubernetes.io/egress-bandwidth': '10 Mbit' }),
      /pod sandbox s1: annotation kubernetes\.io\/egress-bandwidth: "10 Mbit" is not a quantity/,
    );
    assert.throws(() => bandwidthFromAnnotations('s1', { 'kubernetes.io/ingress-bandwidth': '999' }), /is out of range \(allowed: 1k to 1P/);
    assert.throws(() => bandwidthFromAnnotations('s1', { 'kubernetes.io/ingress-bandwidth': '2P' }), /is out of range/);
  });
});

describe('pluginConfig', () => {
  const network: NetworkConfList = {
    cniVersion: '1.0.0',
    name: 'net',
    plugins: [
      { type: 'bridge', name: 'ignored', cniVersion: '0.3.1' },
      { type: 'portmap', capabilities: { portMappings: true, bandwidth: false } },
    ],
  };
  const capabilityArgs = { portMappings: [{ hostPort: 1, containerPort: 2, protocol: 'tcp' }], bandwidth: { ingressRate: 1000, ingressBurst: 1000 } };

  it('sets the list name and version over the plugin ones', () => {
    const config = pluginConfig(network, network.plugins[0]!, capabilityArgs, undefined);
    assert.equal(config.name, 'net');
    assert.equal(config.cniVersion, '1.0.0');
    assert.equal(config.runtimeConfig, undefined);
    assert.equal('prevResult' in config, false);
  });

  it('passes only declared capabilities and the previous result', () => {
    const prevResult = { cniVersion: '1.0.0', ips: [] };
    const config = pluginConfig(network, network.plugins[1]!, capabilityArgs, prevResult);
    assert.deepEqual(config.runtimeConfig, { portMappings: capabilityArgs.portMappings });
    assert.deepEqual(config.prevResult, prevResult);
  });

  it('does not change the network config', () => {
    pluginConfig(network, network.plugins[1]!, capabilityArgs, { cniVersion: '1.0.0' });
    assert.equal(network.plugins[1]!.runtimeConfig, undefined);
    assert.equal(network.plugins[1]!.prevResult, undefined);
  });

  it('names capabilities nobody declares', () => {
    assert.deepEqual(unusedCapabilities(network, capabilityArgs), ['bandwidth']);
  });
});
