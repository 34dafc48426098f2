import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseQuantity } from '../src/quantity.js';
import { InvalidNetworkConfig, parseNetworkConfig, requiredBinaries } from '../src/network-config.js';
import { parseErrorDocument } from '../src/plugin-exec.js';
import { asResult, podIps } from '../src/result.js';
import { ifNameProblem } from '../src/spec.js';
import { resolveOptions } from '../src/options.js';

describe('parseQuantity', () => {
  const cases: [string, number | undefined][] = [
    ['10M', 10e6],
    ['1G', 1e9],
    ['500k', 500e3],
    ['1.5M', 1.5e6],
    ['1Ki', 1024],
    ['2Mi', 2 * 2 ** 20],
    ['1Gi', 2 ** 30],
    ['1e6', 1e6],
    ['1E6', 1e6],
    ['1E', 1e18],
    ['100', 100],
    ['500m', 0.5],
    ['.5k', 500],
    [' 7k ', 7000],
    ['', undefined],
    ['fast', undefined],
    ['10 M', undefined],
    ['10MB', undefined],
    ['1e', undefined],
    ['M', undefined],
  ];
  for (const [text, expected] of cases) {
    it(`parses ${JSON.stringify(text)}`, () => {
      assert.equal(parseQuantity(text), expected);
    });
  }
});

describe('parseNetworkConfig', () => {
  it('wraps a .conf file as a list of one', () => {
    const list = parseNetworkConfig('10-a.conf', JSON.stringify({ cniVersion: '0.4.0', name: 'a', type: 'bridge', bridge: 'br0' }));
    assert.equal(list.name, 'a');
    assert.equal(list.cniVersion, '0.4.0');
    assert.equal(list.plugins.length, 1);
    assert.equal(list.plugins[0]!.type, 'bridge');
    assert.equal(list.plugins[0]!.bridge, 'br0');
  });

  it('reads a .json file in either form', () => {
    const single = parseNetworkConfig('a.json', JSON.stringify({ cniVersion: '1.0.0', name: 'a', type: 'ptp' }));
    assert.equal(single.plugins[0]!.type, 'ptp');
    const list = parseNetworkConfig('b.json', JSON.stringify({ cniVersion: '1.0.0', name: 'b', plugins: [{ type: 'ptp' }, { type: 'portmap' }] }));
    assert.deepEqual(list.plugins.map((plugin) => plugin.type), ['ptp', 'portmap']);
  });

  it('keeps unknown keys of the list and plugins', () => {
    const list = parseNetworkConfig('a.conflist', JSON.stringify({ cniVersion: '1.0.0', name: 'a', custom: 1, plugins: [{ type: 'x', knob: [1, 2] }] }));
    assert.equal(list.custom, 1);
    assert.deepEqual(list.plugins[0]!.knob, [1, 2]);
  });

  it('normalises disableCheck strings', () => {
    const list = parseNetworkConfig('a.conflist', JSON.stringify({ cniVersion: '1.0.0', name: 'a', disableCheck: 'true', plugins: [{ type: 'x' }] }));
    assert.equal(list.disableCheck, true);
  });

  const invalid: [string, string, RegExp][] = [
    ['a.conflist', '{', /invalid JSON/],
    ['a.conflist', 'null', /must be a JSON object/],
    ['a.conflist', '{"name":"a","plugins":[{"type":"x"}]}', /"cniVersion" is missing/],
    ['a.conflist', '{"cniVersion":"0.1.0","name":"a","plugins":[{"type":"x"}]}', /"0\.1\.0" is not supported/],
    ['a.conflist', '{"cniVersion":1,"name":"a","plugins":[{"type":"x"}]}', /"cniVersion" 1 is not supported/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"-a","plugins":[{"type":"x"}]}', /"name" "-a" may contain only/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":{}}', /"plugins" must be a non-empty array/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[7]}', /plugins\[0\] must be an object/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":""}]}', /plugins\[0\]\.type is missing/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":".."}]}', /must be a plain file name/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x","capabilities":[]}]}', /capabilities must be an object/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x","ipam":"host-local"}]}', /ipam must be an object/],
    ['a.conflist', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x","ipam":{"type":"a/b"}}]}', /ipam\.type "a\/b" must be a plain file name/],
    ['a.conf', '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"x"}]}', /rename it to \.conflist/],
    ['a.conf', '{"cniVersion":"1.0.0","name":"a"}', /plugins\[0\]\.type is missing/],
  ];
  for (const [file, text, reason] of invalid) {
    it(`rejects ${text.slice(0, 60)} in ${file}`, () => {
      assert.throws(() => parseNetworkConfig(file, text), (err: Error) => {
        assert.ok(err instanceof InvalidNetworkConfig);
        assert.match(err.message, reason);
        return true;
      });
    });
  }

  it('lists the binaries a list needs', () => {
    const list = parseNetworkConfig('a.conflist', JSON.stringify({
      cniVersion: '1.0.0',
      name: 'a',
      plugins: [{ type: 'bridge', ipam: { type: 'host-local' } }, { type: 'portmap' }, { type: 'bridge', ipam: {} }],
    }));
    assert.deepEqual(requiredBinaries(list), ['bridge', 'host-local', 'portmap']);
  });
});

describe('parseErrorDocument', () => {
  it('reads code, msg and details', () => {
    assert.deepEqual(parseErrorDocument('{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"worse"}\n'), {
      cniVersion: '1.0.0',
      code: 7,
      msg: 'bad',
      details: 'worse',
    });
  });

  it('returns undefined for other output', () => {
    assert.equal(parseErrorDocument(''), undefined);
    assert.equal(parseErrorDocument('panic: runtime error'), undefined);
    assert.equal(parseErrorDocument('{"code":"7","msg":"bad"}'), undefined);
    assert.equal(parseErrorDocument('{"msg":"bad"}'), undefined);
    assert.equal(parseErrorDocument('{not json'), undefined);
  });
});

describe('podIps', () => {
  const result = {
    cniVersion: '1.0.0',
    interfaces: [
      { name: 'cni0', mac: '00:00:00:00:00:01' },
      { name: 'veth1', mac: '00:00:00:00:00:02' },
      { name: 'eth0', mac: '00:00:00:00:00:03', sandbox: '/run/netns/x' },
      { name: 'net1', mac: '00:00:00:00:00:04', sandbox: '/run/netns/x' },
    ],
    ips: [
      { address: 'fd00:1::5/64', interface: 2 },
      { address: '10.88.0.5/16', interface: 2, gateway: '10.88.0.1' },
      { address: '10.88.0.1/16', interface: 0 },
      { address: '10.99.0.5/16', interface: 3 },
    ],
  };

  it('returns the pod interface addresses with IPv4 first', () => {
    assert.deepEqual(podIps(result, 'eth0'), ['10.88.0.5', 'fd00:1::5']);
  });

  it('includes addresses without an interface index', () => {
    assert.deepEqual(podIps({ cniVersion: '0.3.1', ips: [{ version: '4', address: '192.168.1.9/24' }] }, 'eth0'), ['192.168.1.9']);
  });

  it('returns nothing for a result without ips', () => {
    assert.deepEqual(podIps({ cniVersion: '1.0.0' }, 'eth0'), []);
  });
});

describe('asResult', () => {
  it('accepts a result document', () => {
    assert.equal(typeof asResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] }), 'object');
  });

  it('names what is wrong', () => {
    assert.equal(asResult('x'), 'the result is not a JSON object');
    assert.equal(asResult({}), 'the result has no cniVersion');
    assert.equal(asResult({ cniVersion: '1.0.0', ips: {} }), 'the result\'s "ips" is not an array');
    assert.match(String(asResult({ cniVersion: '1.0.0', ips: [{ address: 'nowhere' }] })), /ips\[0\]\.address "nowhere" is not an address/);
  });
});

describe('ifNameProblem', () => {
  it('accepts eth0 and rejects bad names', () => {
    assert.equal(ifNameProblem('eth0'), undefined);
    assert.equal(ifNameProblem(''), 'is empty');
    assert.match(String(ifNameProblem('a-very-long-name0')), /longer than 15 bytes/);
    assert.match(String(ifNameProblem('..')), /must not be/);
    assert.match(String(ifNameProblem('eth/0')), /must not contain/);
    assert.match(String(ifNameProblem('eth 0')), /must not contain/);
  });
});

describe('resolveOptions', () => {
  it('fills defaults', () => {
    const options = resolveOptions({});
    assert.deepEqual(options.conf_dirs, ['/etc/cni/net.d']);
    assert.deepEqual(options.bin_dirs, ['/opt/cni/bin', '/usr/lib/cni']);
    assert.equal(options.interface_name, 'eth0');
  });

  it('rejects relative directories and bad interface names', () => {
    assert.throws(() => resolveOptions({ conf_dirs: ['net.d'] }), /plugins\.cni\.conf_dirs: "net\.d" must be an absolute path/);
    assert.throws(() => resolveOptions({ cache_dir: 'cache' }), /plugins\.cni\.cache_dir: "cache" must be an absolute path/);
    assert.throws(() => resolveOptions({ interface_name: 'eth:0' }), /plugins\.cni\.interface_name: "eth:0" must not contain/);
  });
});
