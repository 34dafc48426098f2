import type { BuiltImage, TarEntry } from './images.js';
import { buildImage, busyboxEntries } from './images.js';
import { pushImage, startRegistry, type TestRegistry } from './registry.js';

/** Applets the runtime tests need beyond the base image's. */
const EXTRA_APPLETS = ['dd', 'yes', 'unshare', 'cut', 'seq', 'xargs', 'usleep'];

/** Returns a layer with a user 1000 ("user", also in group "extra") and the extra applet links. */
function runtimeLayer(): TarEntry[] {
  return [
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { name: 'etc/group', content: 'root:x:0:\nuser:x:1000:\nextra:x:3000:user\nnogroup:x:65534:\n' },
    { name: 'home/', type: 'directory' },
    { name: 'home/user/', type: 'directory', uid: 1000, gid: 1000 },
    { name: 'mnt/', type: 'directory' },
    { name: 'bin/', type: 'directory' },
    ...EXTRA_APPLETS.map((applet): TarEntry => ({ name: `bin/${applet}`, type: 'symlink', linkname: 'busybox', mode: 0o777 })),
  ];
}

/** Builds a busybox image for runtime tests with the given image config (`User`, `Cmd`, ...). */
export async function runtimeImage(config: Record<string, unknown> = {}): Promise<BuiltImage> {
  return buildImage({ layers: [{ entries: await busyboxEntries() }, { entries: runtimeLayer() }], config });
}

/** A registry on 127.0.0.1 holding the images the runtime tests use, and their references. */
export interface RuntimeImages {
  registry: TestRegistry;
  /** Cmd `sh`, runs as root. */
  busybox: string;
  /** `User: 1000`. */
  user1000: string;
  /** Entrypoint sleeps until killed; the tests use it as the pause image. */
  pause: string;
  stop(): Promise<void>;
}

export async function startRuntimeImages(): Promise<RuntimeImages> {
  const registry = await startRegistry();
  try {
    await pushImage(registry, 'runtime/busybox', await runtimeImage({ Cmd: ['sh'] }), 'latest');
    await pushImage(registry, 'runtime/user1000', await runtimeImage({ User: '1000', Cmd: ['sh'] }), 'latest');
    await pushImage(registry, 'runtime/pause', await runtimeImage({ Entrypoint: ['/bin/sleep', '2147483647'], Cmd: null }), 'latest');
  } catch (err) {
    await registry.stop();
    throw err;
  }
  return {
    registry,
    busybox: `${registry.host}/runtime/busybox:latest`,
    user1000: `${registry.host}/runtime/user1000:latest`,
    pause: `${registry.host}/runtime/pause:latest`,
    stop: () => registry.stop(),
  };
}
