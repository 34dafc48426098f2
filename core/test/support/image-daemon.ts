import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'smol-toml';
import { PROJECT_ROOT } from '../../src/paths.js';
import { TestDaemon, type DaemonOptions } from './daemon.js';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';

/** A runtime driver plugin for tests that need a daemon but no containers. */
export const STUB_RUNTIME_PLUGIN = path.join(PROJECT_ROOT, 'core/test/fixtures/stub-runtime');

export interface ImageDaemonOptions {
  /** Contents of the registries.conf the daemon reads (TOML as an object); default: no search registries. */
  registries?: Record<string, unknown>;
  /** Contents of the auth file (`{ auths: {...} }`); none when unset. */
  authFile?: Record<string, unknown>;
  /** Extra keys of the `[image]` table. */
  image?: Record<string, unknown>;
  /** Extra top-level config keys. */
  config?: Record<string, unknown>;
  /** Reuse the state directory of an earlier daemon. */
  dir?: string;
}

/**
 * Starts a daemon for image tests: the stub runtime, no pod network, and a registries.conf and
 * auth file of the test's own (never the host's /etc/containers files).
 */
export async function startImageDaemon(options: ImageDaemonOptions = {}): Promise<TestDaemon> {
  const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'berth-test-')));
  const registriesConf = path.join(dir, 'registries.conf');
  await writeFile(registriesConf, stringify(options.registries ?? { 'unqualified-search-registries': [] }));
  let authFile = '';
  if (options.authFile) {
    authFile = path.join(dir, 'auth.json');
    await writeFile(authFile, JSON.stringify(options.authFile), { mode: 0o600 });
  }

  const daemonOptions: DaemonOptions = {
    dir,
    config: {
      plugin_dirs: [STUB_RUNTIME_PLUGIN],
      runtimes: { stub: { driver: 'stub', options: {} } },
      default_runtime: 'stub',
      network: { provider: '' },
      image: {
        registries_conf: registriesConf,
        registries_conf_dir: path.join(dir, 'registries.conf.d'),
        certs_dir: path.join(dir, 'certs.d'),
        auth_file: authFile,
        ...options.image,
      },
      ...options.config,
    },
  };
  return TestDaemon.start(daemonOptions);
}

/** A registries.conf (as an object for smol-toml) marking each host insecure (plain HTTP). */
export function insecureRegistries(hosts: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'unqualified-search-registries': [],
    registry: hosts.map((host) => ({ prefix: host, location: host, insecure: true })),
    ...extra,
  };
}

export { stringify as toToml };
