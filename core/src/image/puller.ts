import type { Logger } from '../log.js';
import { BerthError, errorMessage, InvalidArgumentError, NotFoundError, PermissionDeniedError, UnavailableError } from '../errors.js';
import type { AuthFile } from './auth-file.js';
import { formatPlatform, parseManifest, selectPlatform, type ImageManifest, type Platform } from './manifest.js';
import { formatReference, withDefaultTag, type ImageReference, type ParsedReference } from './reference.js';
import { pullEndpoints, resolveNames, type PullEndpoint, type RegistriesConfig } from './registries-conf.js';
import { ManifestUnknownError, RegistryAuthError, type RegistryClient, type RepositorySession } from './registry-client.js';
import type { ImageConfig, RegistryAuth } from './store.js';

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/** An image found in a registry: its manifest and config, and the session that can fetch its layers. */
export interface ResolvedImage {
  /** The fully qualified name that matched, with its tag or digest. */
  reference: ImageReference;
  session: RepositorySession;
  /** Digest of the manifest or index the reference points to; repo digests use it. */
  topDigest: string;
  /** Digest of the platform manifest (equal to `topDigest` unless the reference is an index). */
  manifestDigest: string;
  manifest: ImageManifest;
  configDigest: string;
  config: ImageConfig;
}

/**
 * Finds an image in the registries: resolves a short name through aliases and search registries,
 * tries each name's mirrors and then its primary location, selects this node's platform from an
 * index and fetches the config.
 */
export class ImagePuller {
  constructor(
    private readonly registries: RegistriesConfig,
    private readonly authFile: AuthFile,
    private readonly client: RegistryClient,
    private readonly platform: Platform,
  ) {}

  /** Returns the fully qualified names `parsed` may mean, in the order a pull tries them. */
  candidates(parsed: ParsedReference): ImageReference[] {
    return resolveNames(this.registries, parsed.reference, parsed.qualified).map(withDefaultTag);
  }

  /**
   * Resolves `parsed` to an image. Throws NotFoundError naming every place tried when no registry
   * has it, PermissionDeniedError when a registry rejected the credentials and none had the
   * image, and UnavailableError when a registry could not be reached.
   */
  async resolve(parsed: ParsedReference, auth: RegistryAuth | undefined, log: Logger, signal?: AbortSignal): Promise<ResolvedImage> {
    const failures: { where: string; err: unknown }[] = [];

    for (const reference of this.candidates(parsed)) {
      for (const endpoint of pullEndpoints(this.registries, reference)) {
        const where = `${endpoint.host}/${endpoint.path}`;
        const session = this.client.repository(endpoint, this.credentialsFor(endpoint, auth), log);
        try {
          const resolved = await this.resolveAt(session, reference, signal);
          log.info({ resolved_image: formatReference(reference), registry: endpoint.host, mirror: endpoint.mirror, manifest: resolved.manifestDigest }, 'image manifest resolved');
          return resolved;
        } catch (err) {
          if (signal?.aborted) throw err;
          const fallThrough = err instanceof ManifestUnknownError || err instanceof RegistryAuthError || err instanceof UnavailableError || endpoint.mirror;
          if (!fallThrough) throw err;
          log.info({ resolved_image: formatReference(reference), registry: endpoint.host, mirror: endpoint.mirror, err: errorMessage(err) }, 'image not pulled from this registry; trying the next one');
          failures.push({ where, err });
        }
      }
    }

    throw summarise(formatReference(parsed.reference), failures);
  }

  /**
   * Picks the credentials for one endpoint: the request's when they are meant for it, else the
   * auth file's entry for the endpoint's own host. Request credentials without server_address
   * are meant for the registry the image name resolves to, so a mirror never receives them.
   * NOTE: a short name without server_address sends them to each search registry tried in turn,
   * because the request does not name the registry they are for.
   */
  private credentialsFor(endpoint: PullEndpoint, auth: RegistryAuth | undefined): RegistryAuth | undefined {
    if (auth && hasCredentials(auth)) {
      const server = auth.serverAddress ? normaliseServer(auth.serverAddress) : '';
      if (server === '' ? !endpoint.mirror : serverMatches(server, endpoint)) return auth;
    }
    return this.authFile.lookup(endpoint.host, endpoint.path);
  }

  private async resolveAt(session: RepositorySession, reference: ImageReference, signal?: AbortSignal): Promise<ResolvedImage> {
    const name = formatReference(reference);
    const target = reference.digest ?? reference.tag ?? 'latest';
    const top = await session.manifest(target, signal);
    if (reference.digest !== undefined && top.digest !== reference.digest) {
      throw new InvalidArgumentError(`${session.label}: manifest ${reference.digest} has digest ${top.digest}; the registry sent other content`);
    }

    let document = parseManifest(top.bytes, top.contentType, `${name} (${session.label})`);
    let manifestDigest = top.digest;
    if (document.kind === 'index') {
      const descriptor = selectPlatform(document, this.platform);
      if (!descriptor) {
        const available = document.manifests.map((item) => formatPlatform(item.platform)).join(', ') || 'none';
        throw new NotFoundError(`image "${name}" has no manifest for this node's platform ${formatPlatform(this.platform)} (available: ${available})`);
      }
      const platformManifest = await session.manifest(descriptor.digest, signal);
      if (platformManifest.digest !== descriptor.digest) {
        throw new InvalidArgumentError(`${session.label}: manifest ${descriptor.digest} has digest ${platformManifest.digest}; the registry sent other content`);
      }
      document = parseManifest(platformManifest.bytes, platformManifest.contentType, `${name} ${formatPlatform(descriptor.platform)} (${session.label})`);
      if (document.kind !== 'manifest') throw new InvalidArgumentError(`image "${name}": the index entry for ${formatPlatform(this.platform)} is itself an index`);
      manifestDigest = platformManifest.digest;
    }

    const configBytes = await session.blobBytes(document.config.digest, MAX_CONFIG_BYTES, signal);
    const config = parseConfig(configBytes, `image "${name}" config ${document.config.digest}`);
    if (config.rootfs.diff_ids.length !== document.layers.length) {
      throw new InvalidArgumentError(
        `image "${name}": the manifest lists ${document.layers.length} layers but the config's rootfs.diff_ids has ${config.rootfs.diff_ids.length}`,
      );
    }

    return { reference, session, topDigest: top.digest, manifestDigest, manifest: document, configDigest: document.config.digest, config };
  }
}

function parseConfig(bytes: Buffer, where: string): ImageConfig {
  let config: ImageConfig;
  try {
    config = JSON.parse(bytes.toString('utf8')) as ImageConfig;
  } catch {
    throw new InvalidArgumentError(`${where}: not valid JSON`);
  }
  const diffIds = config?.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.some((id) => typeof id !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(id))) {
    throw new InvalidArgumentError(`${where}: rootfs.diff_ids must be a list of sha256 digests`);
  }
  return config;
}

function hasCredentials(auth: RegistryAuth): boolean {
  return Boolean(auth.username || auth.password || auth.auth || auth.identityToken || auth.registryToken);
}

/** Returns true when `server` (`host` or `host/path`) is the endpoint's host or a path prefix of its repository. */
function serverMatches(server: string, endpoint: PullEndpoint): boolean {
  const repository = `${endpoint.host}/${endpoint.path}`;
  return server === endpoint.host || server === repository || repository.startsWith(`${server}/`);
}

function normaliseServer(address: string): string {
  const host = address.replace(/^https?:\/\//, '').replace(/\/+$/, '').replace(/\/v[12]$/, '');
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

/** Builds the error of a pull that no endpoint served, naming each place tried and why it failed. */
function summarise(name: string, failures: { where: string; err: unknown }[]): BerthError {
  const tried = failures.map((failure) => errorMessage(failure.err)).join('; ');
  const places = [...new Set(failures.map((failure) => failure.where))].join(', ');
  const kinds = failures.map((failure) => failure.err);

  if (kinds.some((err) => err instanceof UnavailableError)) {
    return new UnavailableError(`image "${name}" could not be pulled: a registry could not be reached (tried ${places}): ${tried}`);
  }
  if (kinds.some((err) => err instanceof RegistryAuthError)) {
    return new PermissionDeniedError(`image "${name}" could not be pulled: access denied (tried ${places}): ${tried}`);
  }
  return new NotFoundError(`image "${name}" not found (tried ${places || 'no registry'}): ${tried || 'no registry configured'}`);
}
