import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { NetworkHarness, PROJECT_ROOT } from './support/harness.js';

const PREPARE_HOST = path.join(PROJECT_ROOT, 'scripts/prepare-host.sh');
const SHIPPED_LIST = path.join(PROJECT_ROOT, 'plugins/cni/conf/10-berth-bridge.conflist');

describe('quick-start pod network', () => {
  let harness: NetworkHarness;

  before(async () => {
    harness = await NetworkHarness.create();
  });

  after(async () => {
    await harness.cleanup();
  });

  it('installs the bridge list into an empty directory', async () => {
    const confDir = path.join(harness.dir, 'empty');
    const result = await execa('bash', [PREPARE_HOST], { env: { BERTH_CNI_CONF_DIR: confDir }, reject: false });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(await readdir(confDir), ['10-berth-bridge.conflist']);
    assert.equal(await readFile(path.join(confDir, '10-berth-bridge.conflist'), 'utf8'), await readFile(SHIPPED_LIST, 'utf8'));
  });

  it('leaves a directory with a config alone', async () => {
    const confDir = path.join(harness.dir, 'configured');
    await mkdir(confDir);
    await writeFile(path.join(confDir, '50-admin.conf'), '{}');
    const result = await execa('bash', [PREPARE_HOST], { env: { BERTH_CNI_CONF_DIR: confDir }, reject: false });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(await readdir(confDir), ['50-admin.conf']);
  });

  it('ships a list the provider accepts', async () => {
    await harness.writeConfig('10-berth-bridge.conflist', await readFile(SHIPPED_LIST, 'utf8'));
    const provider = await harness.provider();
    assert.deepEqual(await provider.status(), { ready: true });

    const list = JSON.parse(await readFile(SHIPPED_LIST, 'utf8')) as { plugins: { type: string; ipam?: { type: string } }[] };
    assert.deepEqual(list.plugins.map((plugin) => plugin.type), ['bridge', 'portmap', 'bandwidth']);
    assert.equal(list.plugins[0]!.ipam?.type, 'host-local');
  });
});
