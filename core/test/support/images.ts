import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import tar from 'tar-stream';

/**
 * Deterministic OCI test images built from the busybox-static binary. Every timestamp is fixed and
 * entries keep their given order, so the same call always gives the same digests.
 */

export const BUSYBOX = '/bin/busybox';
/** 2024-01-01T00:00:00Z: the mtime of every fixture entry. */
export const FIXTURE_MTIME = new Date(Date.UTC(2024, 0, 1));

export type Compression = 'gzip' | 'zstd' | 'none';

export interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as `SCHILY.xattr.<name>` PAX records. */
  xattrs?: Record<string, string>;
  mtime?: Date;
}

export interface LayerSpec {
  entries: TarEntry[];
  compression?: Compression;
}

export interface BuiltLayer {
  mediaType: string;
  digest: string;
  size: number;
  diffId: string;
  /** Size of the uncompressed tar, in bytes. */
  tarBytes: number;
  blob: Buffer;
}

export interface BuiltImage {
  kind: 'image';
  mediaType: string;
  manifest: Buffer;
  /** sha256 of the manifest: what `name@digest` pulls. */
  digest: string;
  config: Buffer;
  /** sha256 of the config: the image ID berth reports. */
  configDigest: string;
  layers: BuiltLayer[];
}

export interface BuiltIndex {
  kind: 'index';
  mediaType: string;
  manifest: Buffer;
  digest: string;
  images: BuiltImage[];
}

export interface ImageOptions {
  layers: LayerSpec[];
  /** The image config's `config` object (User, Env, Cmd, ...). */
  config?: Record<string, unknown>;
  architecture?: string;
  os?: string;
  variant?: string;
  /** Build a Docker schema 2 manifest instead of an OCI one. */
  docker?: boolean;
  /** Replace the diff IDs written into the config (to build an image whose layers do not match). */
  diffIdsOverride?: string[];
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Packs entries into an uncompressed tar, in the given order. */
export async function packTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });

  for (const entry of entries) {
    const type = entry.type ?? (entry.content !== undefined ? 'file' : 'directory');
    const content = entry.content === undefined ? undefined : Buffer.from(entry.content);
    const pax: Record<string, string> = {};
    for (const [name, value] of Object.entries(entry.xattrs ?? {})) pax[`SCHILY.xattr.${name}`] = value;
    const header = {
      name: entry.name,
      type,
      mode: entry.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      mtime: entry.mtime ?? FIXTURE_MTIME,
      size: content?.length ?? 0,
      ...(entry.linkname !== undefined ? { linkname: entry.linkname } : {}),
      ...(entry.devmajor !== undefined ? { devmajor: entry.devmajor, devminor: entry.devminor ?? 0 } : {}),
      ...(Object.keys(pax).length > 0 ? { pax } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      if (content) pack.entry(header, content, (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** Compresses a layer tar; zstd uses the zstd command at level 3. */
export async function compress(data: Buffer, compression: Compression): Promise<Buffer> {
  if (compression === 'none') return data;
  if (compression === 'gzip') return gzipSync(data, { level: 6 });
  const { stdout } = await execa('zstd', ['-q', '-c', '-3', '--no-check'], { input: data, encoding: 'buffer' });
  return Buffer.from(stdout);
}

function layerMediaType(compression: Compression, docker: boolean): string {
  if (docker) {
    if (compression === 'zstd') throw new Error('Docker schema 2 has no zstd layer type');
    return compression === 'gzip' ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.docker.image.rootfs.diff.tar';
  }
  return { gzip: 'application/vnd.oci.image.layer.v1.tar+gzip', zstd: 'application/vnd.oci.image.layer.v1.tar+zstd', none: 'application/vnd.oci.image.layer.v1.tar' }[compression];
}

export async function buildLayer(spec: LayerSpec, docker = false): Promise<BuiltLayer> {
  const compression = spec.compression ?? 'gzip';
  const tarball = await packTar(spec.entries);
  const blob = await compress(tarball, compression);
  return { mediaType: layerMediaType(compression, docker), digest: sha256(blob), size: blob.length, diffId: sha256(tarball), tarBytes: tarball.length, blob };
}

/** Builds an image (manifest, config and layer blobs) ready to push. */
export async function buildImage(options: ImageOptions): Promise<BuiltImage> {
  const docker = options.docker ?? false;
  const layers: BuiltLayer[] = [];
  for (const spec of options.layers) layers.push(await buildLayer(spec, docker));

  const configObject: Record<string, unknown> = {
    created: FIXTURE_MTIME.toISOString(),
    architecture: options.architecture ?? hostArchitecture(),
    os: options.os ?? 'linux',
    ...(options.variant ? { variant: options.variant } : {}),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'], ...options.config },
    rootfs: { type: 'layers', diff_ids: options.diffIdsOverride ?? layers.map((layer) => layer.diffId) },
    history: layers.map(() => ({ created: FIXTURE_MTIME.toISOString(), created_by: 'berth test fixture' })),
  };
  const config = Buffer.from(JSON.stringify(configObject));
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.v2+json' : 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType: docker ? 'application/vnd.docker.container.image.v1+json' : 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: layers.map((layer) => ({ mediaType: layer.mediaType, digest: layer.digest, size: layer.size })),
    }),
  );
  return { kind: 'image', mediaType, manifest, digest: sha256(manifest), config, configDigest: sha256(config), layers };
}

/** Builds an OCI index (or Docker manifest list) over images, each with its config's platform. */
export function buildIndex(images: BuiltImage[], docker = false): BuiltIndex {
  const mediaType = docker ? 'application/vnd.docker.distribution.manifest.list.v2+json' : 'application/vnd.oci.image.index.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      manifests: images.map((image) => {
        const config = JSON.parse(image.config.toString()) as { architecture: string; os: string; variant?: string };
        return {
          mediaType: image.mediaType,
          digest: image.digest,
          size: image.manifest.length,
          platform: { architecture: config.architecture, os: config.os, ...(config.variant ? { variant: config.variant } : {}) },
        };
      }),
    }),
  );
  return { kind: 'index', mediaType, manifest, digest: sha256(manifest), images };
}

/** The node's architecture in OCI terms. */
export function hostArchitecture(): string {
  return ({ x64: 'amd64', arm64: 'arm64', arm: 'arm' } as Record<string, string>)[process.arch] ?? process.arch;
}

/** Applets linked to busybox in the base image's /bin. */
export const BUSYBOX_APPLETS = [
  'sh', 'ls', 'cat', 'echo', 'id', 'stat', 'sleep', 'true', 'false', 'test', 'env', 'ps', 'mkdir', 'rm', 'touch',
  'wc', 'head', 'grep', 'readlink', 'find', 'chmod', 'chown', 'ln', 'cp', 'mv', 'kill', 'hostname', 'whoami', 'getfattr',
  'mount', 'df', 'du', 'uname', 'date', 'printf', 'tr', 'sed', 'awk', 'sort', 'md5sum', 'sha256sum', 'nc', 'wget', 'ip', 'ifconfig', 'ping',
];

/**
 * The entries of a minimal busybox root filesystem: /bin/busybox with applet symlinks, /etc with
 * passwd, group and hosts, /tmp (mode 1777) and the usual empty mount point directories.
 */
export async function busyboxEntries(): Promise<TarEntry[]> {
  const binary = await readFile(BUSYBOX);
  return [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', content: binary, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((applet): TarEntry => ({ name: `bin/${applet}`, type: 'symlink', linkname: 'busybox', mode: 0o777 })),
    { name: 'dev/', type: 'directory' },
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
    { name: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
    { name: 'etc/hosts', content: '127.0.0.1 localhost\n' },
    { name: 'proc/', type: 'directory' },
    { name: 'root/', type: 'directory', mode: 0o700 },
    { name: 'sys/', type: 'directory' },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    { name: 'usr/', type: 'directory' },
    { name: 'usr/bin/', type: 'directory' },
    { name: 'var/', type: 'directory' },
  ];
}

/** The base image: one gzip layer with the busybox root filesystem; `Cmd` is `sh`. */
export async function busyboxImage(options: { config?: Record<string, unknown>; compression?: Compression; docker?: boolean } = {}): Promise<BuiltImage> {
  return buildImage({
    layers: [{ entries: await busyboxEntries(), compression: options.compression ?? 'gzip' }],
    config: options.config ?? {},
    ...(options.docker !== undefined ? { docker: options.docker } : {}),
  });
}

/**
 * Two layers over busybox: the second deletes /etc/hosts with a whiteout, replaces /opt/data
 * (which held old.txt and keep/) with an opaque directory holding new.txt, and adds /etc/added.
 */
export async function whiteoutImage(): Promise<BuiltImage> {
  return buildImage({
    layers: [
      { entries: await busyboxEntries() },
      {
        entries: [
          { name: 'opt/', type: 'directory' },
          { name: 'opt/data/', type: 'directory' },
          { name: 'opt/data/old.txt', content: 'old\n' },
          { name: 'opt/data/keep/', type: 'directory' },
          { name: 'opt/data/keep/file', content: 'lower\n' },
          { name: 'opt/other.txt', content: 'other\n' },
        ],
      },
      {
        entries: [
          { name: 'etc/', type: 'directory' },
          { name: 'etc/.wh.hosts', content: '' },
          { name: 'etc/added', content: 'added\n' },
          { name: 'opt/', type: 'directory' },
          { name: 'opt/data/', type: 'directory', mode: 0o750 },
          { name: 'opt/data/.wh..wh..opq', content: '' },
          { name: 'opt/data/new.txt', content: 'new\n' },
        ],
      },
    ],
  });
}

/**
 * An index with an image for this node's architecture and one for another, each with a
 * /platform file naming its architecture.
 */
export async function multiPlatformIndex(): Promise<BuiltIndex> {
  const base = await busyboxEntries();
  const other = hostArchitecture() === 'arm64' ? 'amd64' : 'arm64';
  const images: BuiltImage[] = [];
  for (const [architecture, variant] of [[other, other === 'arm64' ? 'v8' : undefined], [hostArchitecture(), undefined]] as const) {
    images.push(
      await buildImage({
        architecture,
        ...(variant ? { variant } : {}),
        layers: [{ entries: base }, { entries: [{ name: 'platform', content: `${architecture}\n` }] }],
      }),
    );
  }
  return buildIndex(images);
}

/** An index that has no image for this node's architecture. */
export async function foreignOnlyIndex(): Promise<BuiltIndex> {
  const image = await buildImage({ architecture: 's390x', layers: [{ entries: [{ name: 'platform', content: 's390x\n' }] }] });
  return buildIndex([image]);
}

/** The busybox base with zstd-compressed layers, plus an uncompressed layer on top. */
export async function zstdImage(): Promise<BuiltImage> {
  return buildImage({
    layers: [
      { entries: await busyboxEntries(), compression: 'zstd' },
      { entries: [{ name: 'zstd-marker', content: 'zstd\n' }], compression: 'zstd' },
      { entries: [{ name: 'plain-marker', content: 'plain\n' }], compression: 'none' },
    ],
  });
}

/**
 * Busybox with a user "app" (uid 1000) and group "app" (gid 1000) in /etc/passwd and /etc/group,
 * a home directory owned by it, and `User` set to `user` (default "app").
 */
export async function userImage(user = 'app'): Promise<BuiltImage> {
  const base = (await busyboxEntries()).filter((entry) => entry.name !== 'etc/passwd' && entry.name !== 'etc/group');
  return buildImage({
    config: { User: user },
    layers: [
      {
        entries: [
          ...base,
          { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' },
          { name: 'etc/group', content: 'root:x:0:\napp:x:1000:\nextra:x:2000:app\n' },
          { name: 'home/', type: 'directory' },
          { name: 'home/app/', type: 'directory', uid: 1000, gid: 1000, mode: 0o750 },
        ],
      },
    ],
  });
}

/**
 * A layer that tries to write `target` outside the layer directory with a `../` entry name.
 * `depth` levels of `..` lead from the layer root to the file system root.
 */
export async function escapeDotDotImage(target: string): Promise<BuiltImage> {
  const relative = `${'../'.repeat(24)}${target.replace(/^\/+/, '')}`;
  return buildImage({ layers: [{ entries: [{ name: 'ok.txt', content: 'ok\n' }, { name: relative, content: 'escaped\n' }] }] });
}

/** A layer with an absolute entry name pointing at `target`. */
export async function escapeAbsoluteImage(target: string): Promise<BuiltImage> {
  return buildImage({ layers: [{ entries: [{ name: target, content: 'escaped\n' }] }] });
}

/**
 * A layer whose first entry is a symlink `escape` to `targetDir` and whose second entry writes
 * `escape/pwned` through it.
 */
export async function escapeSymlinkImage(targetDir: string): Promise<BuiltImage> {
  return buildImage({
    layers: [
      {
        entries: [
          { name: 'escape', type: 'symlink', linkname: targetDir },
          { name: 'escape/pwned', content: 'escaped\n' },
        ],
      },
    ],
  });
}

/** Like escapeSymlinkImage, but the symlink comes from a lower layer and the write from the next. */
export async function escapeLowerSymlinkImage(targetDir: string): Promise<BuiltImage> {
  return buildImage({
    layers: [
      { entries: [{ name: 'escape', type: 'symlink', linkname: targetDir }] },
      { entries: [{ name: 'escape/pwned', content: 'escaped\n' }] },
    ],
  });
}

/**
 * A deterministic image of `layerCount` layers with `bytesPerLayer` of seeded pseudo-random data
 * each (incompressible, so blob sizes match), for download counting and benchmarks.
 */
export async function randomImage(layerCount: number, bytesPerLayer: number, seed = 1): Promise<BuiltImage> {
  const layers: LayerSpec[] = [];
  for (let index = 0; index < layerCount; index++) {
    const files: TarEntry[] = [{ name: `data${index}/`, type: 'directory' }];
    const fileSize = Math.min(bytesPerLayer, 4 * 1024 * 1024);
    for (let offset = 0, file = 0; offset < bytesPerLayer; offset += fileSize, file++) {
      files.push({ name: `data${index}/file${file}`, content: seededBytes(Math.min(fileSize, bytesPerLayer - offset), seed * 1000 + index * 100 + file) });
    }
    layers.push({ entries: files });
  }
  return buildImage({ layers });
}

/**
 * A deterministic image whose layers compress about as real ones do (gzip level 6 shrinks it about
 * 2.1-fold): each layer of `bytesPerLayer` is half text-like files (words and numbers in lines,
 * about 3-fold) and half binary-like files (seeded random bytes with every other 4 bytes zero,
 * about 1.6-fold), in files of at most 1 MiB.
 */
export async function mixedImage(layerCount: number, bytesPerLayer: number, seed = 1): Promise<BuiltImage> {
  const layers: LayerSpec[] = [];
  const fileSize = Math.min(bytesPerLayer, 1024 * 1024);
  for (let index = 0; index < layerCount; index++) {
    const files: TarEntry[] = [{ name: `data${index}/`, type: 'directory' }];
    for (let offset = 0, file = 0; offset < bytesPerLayer; offset += fileSize, file++) {
      const size = Math.min(fileSize, bytesPerLayer - offset);
      const fileSeed = seed * 1000 + index * 100 + file;
      const content = file % 2 === 0 ? seededText(size, fileSeed) : seededBinary(size, fileSeed);
      files.push({ name: `data${index}/file${file}${file % 2 === 0 ? '.txt' : '.bin'}`, content });
    }
    layers.push({ entries: files });
  }
  return buildImage({ layers });
}

const TEXT_WORDS = (
  'the of and to in is for on that with as by this be are from at or an it not which have was will can ' +
  'config value error return function import export const let if else while true false null default ' +
  'server client request response status message file path name type version build test data index ' +
  'user group mode size time date level debug info warn option format string number list map set'
).split(' ');

/** Lines of seeded pseudo-random words and numbers: the same seed gives the same text. */
export function seededText(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length);
  let state = (seed * 2654435761) >>> 0 || 1;
  const next = (): number => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };

  let offset = 0;
  let column = 0;
  while (offset < length) {
    const roll = next();
    const word = roll % 8 === 0 ? String(roll % 100_000) : TEXT_WORDS[roll % TEXT_WORDS.length]!;
    column += word.length + 1;
    const separator = column > 72 ? '\n' : ' ';
    if (separator === '\n') column = 0;
    offset += buffer.write(word + separator, offset);
  }
  return buffer;
}

/** Seeded random bytes with every other 4-byte word zero, which compresses about as machine code does. */
export function seededBinary(length: number, seed: number): Buffer {
  const buffer = seededBytes(length, seed);
  for (let offset = 4; offset < length; offset += 8) buffer.fill(0, offset, Math.min(offset + 4, length));
  return buffer;
}

/** Pseudo-random bytes from a xorshift generator: the same seed gives the same bytes. */
export function seededBytes(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let offset = 0; offset < length; offset += 4) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    if (offset + 4 <= length) buffer.writeUInt32LE(state, offset);
    else for (let byte = 0; offset + byte < length; byte++) buffer[offset + byte] = (state >>> (8 * byte)) & 0xff;
  }
  return buffer;
}
