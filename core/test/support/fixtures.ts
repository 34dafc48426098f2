import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/paths.js';

/** The vendor-style runtime driver plugin shipped with the tests (plain JS, its own manifest). */
export const VENDOR_PLUGIN_FIXTURE = path.join(PROJECT_ROOT, 'core/test/fixtures/vendor-plugin');

/** Config that serves one handler, `vendor`, from the vendor fixture copied to `pluginDir`. */
export function vendorRuntimeConfig(pluginDir: string, options: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    plugin_dirs: [pluginDir],
    default_runtime: 'vendor',
    runtimes: { vendor: { driver: 'example', options } },
    network: { provider: '' },
  };
}

/**
 * Copies the vendor plugin into a fresh temporary directory, as a vendor would ship it, and applies
 * `editManifest` to its berth-plugin.json. Returns the plugin directory.
 */
export async function installVendorPlugin(
  editManifest: (manifest: Record<string, unknown>) => unknown = (manifest) => manifest,
): Promise<string> {
  const parent = await mkdtemp(path.join(os.tmpdir(), 'berth-vendor-'));
  const dir = path.join(parent, 'example-vendor-runtime');
  await cp(VENDOR_PLUGIN_FIXTURE, dir, { recursive: true });
  const manifestFile = path.join(dir, 'berth-plugin.json');
  const manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as Record<string, unknown>;
  const edited = editManifest(manifest);
  await writeFile(manifestFile, typeof edited === 'string' ? edited : JSON.stringify(edited, null, 2));
  return dir;
}
