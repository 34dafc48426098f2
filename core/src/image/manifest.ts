import { InvalidArgumentError } from '../errors.js';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** The Accept list of a manifest request: every manifest and index type berth can pull. */
export const MANIFEST_ACCEPT = [
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  MediaTypes.dockerManifestList,
  MediaTypes.dockerManifest,
].join(', ');

export type Compression = 'gzip' | 'zstd' | 'none';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;

/**
 * Parses a manifest or index document. `contentType` is the registry's Content-Type; when absent
 * or generic, the document's own `mediaType` or its shape decides. `where` names the document in
 * errors.
 */
export function parseManifest(bytes: Buffer, contentType: string | undefined, where: string): ImageManifest | ImageIndex {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new InvalidArgumentError(`${where}: manifest is not valid JSON`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new InvalidArgumentError(`${where}: manifest must be a JSON object`);
  }

  const declared = typeof data.mediaType === 'string' ? data.mediaType : undefined;
  const header = contentType?.split(';')[0]?.trim();
  let mediaType = header && header !== 'application/json' && header !== 'application/octet-stream' ? header : declared;
  if (mediaType === undefined) mediaType = Array.isArray(data.manifests) ? MediaTypes.ociIndex : MediaTypes.ociManifest;

  if (mediaType === MediaTypes.dockerSchema1 || mediaType === MediaTypes.dockerSchema1Signed || data.schemaVersion === 1) {
    throw new InvalidArgumentError(`${where}: Docker schema 1 manifests are not supported; push the image again with a current client`);
  }

  if (mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerManifestList) {
    if (!Array.isArray(data.manifests)) throw new InvalidArgumentError(`${where}: index has no "manifests" array`);
    const manifests = data.manifests.map((item, index) => parseDescriptor(item, `${where}: manifests[${index}]`));
    return { kind: 'index', mediaType, manifests };
  }

  if (mediaType === MediaTypes.ociManifest || mediaType === MediaTypes.dockerManifest) {
    const config = parseDescriptor(data.config, `${where}: config`);
    if (!Array.isArray(data.layers)) throw new InvalidArgumentError(`${where}: manifest has no "layers" array`);
    const layers = data.layers.map((item, index) => parseDescriptor(item, `${where}: layers[${index}]`));
    for (const [index, layer] of layers.entries()) layerCompression(layer.mediaType, `${where}: layers[${index}]`);
    return { kind: 'manifest', mediaType, config, layers };
  }

  throw new InvalidArgumentError(
    `${where}: unsupported manifest media type "${mediaType}" (supported: ${MANIFEST_ACCEPT})`,
  );
}

function parseDescriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== 'object' || value === null) throw new InvalidArgumentError(`${where}: descriptor must be an object`);
  const descriptor = value as Descriptor;
  if (typeof descriptor.mediaType !== 'string') throw new InvalidArgumentError(`${where}: mediaType is missing`);
  if (typeof descriptor.digest !== 'string' || !DIGEST.test(descriptor.digest)) {
    throw new InvalidArgumentError(`${where}: digest "${String(descriptor.digest)}" is not sha256:<64 hex>`);
  }
  if (!Number.isSafeInteger(descriptor.size) || descriptor.size < 0) {
    throw new InvalidArgumentError(`${where}: size "${String(descriptor.size)}" is not a non-negative integer`);
  }
  return descriptor;
}

/** Returns the compression of a layer media type; throws InvalidArgumentError for a type that is not a layer tar. */
export function layerCompression(mediaType: string, where: string): Compression {
  switch (mediaType) {
    case 'application/vnd.oci.image.layer.v1.tar':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar':
    case 'application/vnd.docker.image.rootfs.diff.tar':
      return 'none';
    case 'application/vnd.oci.image.layer.v1.tar+gzip':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip':
    case 'application/vnd.docker.image.rootfs.diff.tar.gzip':
    case 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip':
      return 'gzip';
    case 'application/vnd.oci.image.layer.v1.tar+zstd':
    case 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd':
      return 'zstd';
    default:
      throw new InvalidArgumentError(
        `${where}: unsupported layer media type "${mediaType}" (supported: OCI layer tar, tar+gzip, tar+zstd and the Docker rootfs diff types)`,
      );
  }
}

/** The platform of this node, in OCI terms (`linux`, `amd64`, variant for ARM). */
export function nodePlatform(): Platform {
  const architectures: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
    mips: 'mips',
    mipsel: 'mipsle',
  };
  const architecture = architectures[process.arch] ?? process.arch;
  const platform: Platform = { os: process.platform, architecture };
  if (architecture === 'arm64') platform.variant = 'v8';
  if (architecture === 'arm') {
    const version = (process.config.variables as Record<string, unknown>).arm_version;
    platform.variant = `v${typeof version === 'string' || typeof version === 'number' ? version : '7'}`;
  }
  return platform;
}

/** Formats a platform as `os/architecture[/variant]`. */
export function formatPlatform(platform: Platform | undefined): string {
  if (!platform) return '(no platform)';
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

/**
 * Picks the manifest for `platform` from an index: same os and architecture, and the same variant
 * when the node has one (an entry without a variant matches too, and for arm64 "v8" equals none).
 * An exact variant match wins over an entry without a variant. Undefined when none matches.
 */
export function selectPlatform(index: ImageIndex, platform: Platform): Descriptor | undefined {
  const normalVariant = (p: Platform): string | undefined =>
    p.architecture === 'arm64' && (p.variant === undefined || p.variant === 'v8') ? undefined : p.variant;

  const wanted = normalVariant(platform);
  let fallback: Descriptor | undefined;
  for (const descriptor of index.manifests) {
    const candidate = descriptor.platform;
    if (!candidate || candidate.os !== platform.os || candidate.architecture !== platform.architecture) continue;
    const variant = normalVariant(candidate);
    if (variant === wanted) return descriptor;
    if (variant === undefined && fallback === undefined) fallback = descriptor;
  }
  return fallback;
}
