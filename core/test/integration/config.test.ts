import 'reflect-metadata';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { ConfigSchema, finishConfig, loadConfig } from '../../src/config/load.js';
import { runCli, TestDaemon } from '../support/daemon.js';
import { installVendorPlugin, vendorRuntimeConfig } from '../support/fixtures.js';

let work: string;
let pluginDir: string;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'berth-config-'));
  pluginDir = await installVendorPlugin();
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  cleanups.push(() => rm(path.dirname(pluginDir), { recursive: true, force: true }));
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Writes `files` (name -> contents) into a fresh directory under the test's work dir. */
async function writeFiles(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(dir, { recursive: true });
  for (const [file, contents] of Object.entries(files)) await writeFile(path.join(dir, file), contents);
  return dir;
}

async function effectiveConfig(args: string[]): Promise<Record<string, unknown>> {
  const result = await runCli(['config', ...args]);
  assert.equal(result.code, 0, result.stderr);
  return parseToml(result.stdout) as Record<string, unknown>;
}

describe('config files', () => {
  it('reads TOML and merges drop-ins in lexical order', async () => {
    const dir = await writeFiles('toml', {
      'berth.toml': 'log_level = "warn"\n[runtime]\nshm_size = 1000000\nstop_timeout_seconds = 5\n',
    });
    const dropIns = await writeFiles('toml.d', {
      '20-last.toml': '[runtime]\nshm_size = 3000000\n',
      '10-first.json': JSON.stringify({ runtime: { shm_size: 2000000 }, image: { pinned_images: ['registry.local/pause:3.9'] } }),
      'README.md': 'not a config file, ignored',
    });

    const config = await effectiveConfig(['--config', path.join(dir, 'berth.toml'), '--config-dir', dropIns]);
    const runtime = config.runtime as Record<string, unknown>;
    assert.equal(config.log_level, 'warn');
    assert.equal(runtime.shm_size, 3000000, 'the last drop-in wins');
    assert.equal(runtime.stop_timeout_seconds, 5, 'keys no drop-in sets keep the main file value');
    assert.equal(runtime.exec_sync_max_output_bytes, 16777216, 'keys no file sets keep their default');
    assert.deepEqual((config.image as Record<string, unknown>).pinned_images, ['registry.local/pause:3.9']);
  });

  it('reads a JSON main file', async () => {
    const dir = await writeFiles('json', {
      'berth.json': JSON.stringify({ root: '/var/lib/berth-json', runtime: { restrict_oom_score_adj: false } }),
    });
    const dropIns = await writeFiles('json.d', {});
    const config = await effectiveConfig(['--config', path.join(dir, 'berth.json'), '--config-dir', dropIns]);
    assert.equal(config.root, '/var/lib/berth-json');
    assert.equal((config.runtime as Record<string, unknown>).restrict_oom_score_adj, false);
  });

  it('rejects a missing drop-in directory given on the command line', async () => {
    const dir = await writeFiles('missing-dir', { 'berth.toml': '' });
    const result = await runCli(['config', '--config', path.join(dir, 'berth.toml'), '--config-dir', path.join(dir, 'absent.d')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /absent\.d: cannot read config drop-in directory/);
  });

  it('lets command line flags override the files', async () => {
    const dir = await writeFiles('flags', { 'berth.toml': 'listen = "/tmp/from-file.sock"\nlog_level = "warn"\n' });
    const dropIns = await writeFiles('flags.d', {});
    const config = await effectiveConfig([
      '--config', path.join(dir, 'berth.toml'), '--config-dir', dropIns, '--listen', '/tmp/from-flag.sock', '--log-level', 'error',
    ]);
    assert.equal(config.listen, '/tmp/from-flag.sock');
    assert.equal(config.log_level, 'error');
  });

  it('rejects a wrong type naming the file and key path', async () => {
    const dir = await writeFiles('type', { 'berth.toml': '[runtime]\nshm_size = "64m"\n' });
    const file = path.join(dir, 'berth.toml');
    const result = await runCli(['config', '--validate', file]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`${file}: runtime\\.shm_size \\(/runtime/shm_size\\): must be of type integer`));
  });

  it('rejects an unknown key and suggests the nearest one', async () => {
    const dir = await writeFiles('unknown', { 'berth.toml': '[runtime]\nshmsize = 1\n' });
    const file = path.join(dir, 'berth.toml');
    const result = await runCli(['config', '--validate', file]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, new RegExp(`${file}: runtime\\.shmsize \\(/runtime/shmsize\\): unknown key "shmsize"; did you mean "shm_size"\\?`));
  });

  it('names the drop-in that holds the error', async () => {
    const dir = await writeFiles('dropin-error', { 'berth.toml': '' });
    const dropIns = await writeFiles('dropin-error.d', { '10-ok.toml': 'log_level = "debug"\n', '20-bad.json': '{"log_level": "loud"}' });
    const result = await runCli(['config', '--config', path.join(dir, 'berth.toml'), '--config-dir', dropIns]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /20-bad\.json: log_level \(\/log_level\): must be one of "fatal", "error", "warn", "info", "debug", "trace"/);
  });

  it('validates plugin options and driver names', async () => {
    const dir = await writeFiles('plugin-options', {
      'options.toml': '[plugins.cni]\nconf_dir = ["/etc/cni/net.d"]\n',
      'driver.toml': 'default_runtime = "x"\n[runtimes.x]\ndriver = "nosuchdriver"\n',
    });

    const options = await runCli(['config', '--validate', path.join(dir, 'options.toml')]);
    assert.equal(options.code, 1);
    assert.match(options.stderr, /plugins\.cni\.conf_dir \(\/plugins\/cni\/conf_dir\): unknown key "conf_dir"; did you mean "conf_dirs"\?/);

    const driver = await runCli(['config', '--validate', path.join(dir, 'driver.toml')]);
    assert.equal(driver.code, 1);
    assert.match(driver.stderr, /runtimes\.x\.driver: no plugin provides runtime-driver "nosuchdriver" \(available: crun, runc\)/);
  });

  it('rejects an unsupported file extension', async () => {
    const dir = await writeFiles('yaml', { 'berth.yaml': 'log_level: debug\n' });
    const result = await runCli(['config', '--validate', path.join(dir, 'berth.yaml')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /unsupported config file extension "\.yaml"; name the file \*\.toml or \*\.json/);
  });

  it('rejects an unknown flag with a suggestion', async () => {
    const result = await runCli(['--confg', '/etc/berth/berth.toml']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /unknown flag --confg; did you mean --config\?/);
    assert.match(result.stderr, /^Usage: berth/m);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  });

  it('rejects a file that is not TOML', async () => {
    const dir = await writeFiles('syntax', { 'berth.toml': '[runtime\nshm_size = 1\n' });
    const result = await runCli(['config', '--validate', path.join(dir, 'berth.toml')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /berth\.toml: invalid TOML/);
  });

  it('rejects a default handler missing from the runtimes table', async () => {
    const dir = await writeFiles('handler', { 'berth.toml': 'default_runtime = "kata"\n' });
    const result = await runCli(['config', '--validate', path.join(dir, 'berth.toml')]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /default_runtime: runtime handler "kata" is not configured \(configured: crun, runc\)/);
  });

  it('prints TOML that parses back to the same effective config', async () => {
    const dir = await writeFiles('roundtrip', {
      'berth.toml': [
        'log_level = "debug"',
        'plugin_dirs = ["/opt/berth/plugins"]',
        'default_runtime = "vm"',
        '[image]',
        'pinned_images = ["registry.local/pause:3.9"]',
        '[runtimes.vm]',
        'driver = "kata"',
        '[runtimes.vm.options]',
        'vcpus = 2',
        'labels = { tier = "gold" }',
        '[plugins.cni]',
        'conf_dirs = ["/etc/cni/net.d"]',
      ].join('\n'),
    });
    const dropIns = await writeFiles('roundtrip.d', {});
    const args = { file: path.join(dir, 'berth.toml'), dir: dropIns };

    const schema = await ConfigSchema.load();
    const { config: expected } = await loadConfig(args, schema);
    const printed = await runCli(['config', '--config', args.file, '--config-dir', args.dir]);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, /^# Bytes of stdout and of stderr kept from one ExecSync call/m, 'keys carry their meaning');
    assert.match(printed.stdout, /^# Default: 16777216$/m, 'keys carry their default');

    const reparsed = finishConfig(parseToml(printed.stdout) as Record<string, unknown>, schema, 'printed');
    assert.deepEqual(reparsed, expected);
  });

  it('reaches the daemon: drop-ins decide the default handler', async () => {
    const base = vendorRuntimeConfig(pluginDir);
    const daemon = await TestDaemon.start({
      config: base,
      dropIns: {
        '10-second.json': { runtimes: { second: { driver: 'example', options: { vcpus: 2 } } } },
        '20-default.toml': { default_runtime: 'second' },
      },
    });
    cleanups.push(() => daemon.cleanup());

    const status = await daemon.client.runtime.Status({ verbose: true });
    const config = JSON.parse(status.info?.config ?? '{}') as Record<string, unknown>;
    assert.equal(config.default_runtime, 'second');
    assert.deepEqual(status.runtime_handlers?.map((handler) => handler.name).sort(), ['', 'second', 'vendor']);
  });
});
