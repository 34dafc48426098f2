import { InvalidArgumentError } from '../errors.js';

/** The registry an image name without a domain belongs to, as the Docker and containers tools assume. */
export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['index.docker.io', 'registry-1.docker.io']);
/** Namespace of Docker Hub's official images: `busybox` is `docker.io/library/busybox`. */
const DOCKER_HUB_OFFICIAL = 'library';
export const DEFAULT_TAG = 'latest';

// The grammar of the distribution reference format (name components, domain, tag, digest).
const NAME_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;
const MAX_NAME_LENGTH = 255;

/** A parsed image reference: `domain/path[:tag][@digest]`. */
export interface ImageReference {
  /** Registry host with an optional port, e.g. `docker.io` or `127.0.0.1:5000`. */
  domain: string;
  /** Repository path inside the registry, e.g. `library/busybox`. */
  path: string;
  tag?: string;
  digest?: string;
}

/** The result of parsing what a client sent, before short-name resolution. */
export interface ParsedReference {
  /** The reference; for an unqualified input, `domain` is empty. */
  reference: ImageReference;
  /** False when the input named no registry (`busybox`, `library/busybox:1.36`). */
  qualified: boolean;
}

/** Returns `domain/path`. */
export function repositoryName(reference: ImageReference): string {
  return reference.domain === '' ? reference.path : `${reference.domain}/${reference.path}`;
}

/** Returns the canonical string: `domain/path:tag`, `domain/path@digest` or both. */
export function formatReference(reference: ImageReference): string {
  let text = repositoryName(reference);
  if (reference.tag !== undefined) text += `:${reference.tag}`;
  if (reference.digest !== undefined) text += `@${reference.digest}`;
  return text;
}

/**
 * Parses an image reference as the kubelet sends it. Docker Hub names get their canonical form
 * (`index.docker.io/busybox` → `docker.io/library/busybox`); a name without a domain stays
 * unqualified for the registries configuration to resolve. Throws InvalidArgumentError naming the
 * part that breaks the grammar.
 */
export function parseReference(input: string): ParsedReference {
  const fail = (reason: string): never => {
    throw new InvalidArgumentError(`image reference "${input}" is invalid: ${reason}`);
  };

  if (input === '') fail('it is empty');
  if (input !== input.trim()) fail('it has leading or trailing white space');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    checkDigest(digest, fail);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) fail(`tag "${tag}" must be 1 to 128 characters of letters, digits, "_", "." and "-", not starting with "." or "-"`);
  }

  let domain = '';
  let path = rest;
  const firstSlash = rest.indexOf('/');
  if (firstSlash >= 0) {
    const first = rest.slice(0, firstSlash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.toLowerCase() !== first) {
      domain = first;
      path = rest.slice(firstSlash + 1);
      if (!DOMAIN.test(domain)) fail(`registry host "${domain}" is not a valid host name with an optional port`);
    }
  }

  if (path === '') fail('the repository name is empty');
  if (domain === '' && SHA256_HEX.test(path) && tag === undefined && digest === undefined) {
    fail('a 64-character hex string is an image ID, not a repository name');
  }
  for (const component of path.split('/')) {
    if (!NAME_COMPONENT.test(component)) {
      fail(`repository path component "${component}" must be lowercase letters and digits, separated by ".", "_", "__" or "-"`);
    }
  }

  if (domain !== '') {
    ({ domain, path } = canonicalHubName(domain, path));
  }
  if (domain.length + 1 + path.length > MAX_NAME_LENGTH) fail(`the name is longer than ${MAX_NAME_LENGTH} characters`);

  const reference: ImageReference = { domain, path };
  if (tag !== undefined) reference.tag = tag;
  if (digest !== undefined) reference.digest = digest;
  return { reference, qualified: domain !== '' };
}

/**
 * Qualifies an unqualified reference with `domain` the way the containers tools do: Docker Hub
 * puts a one-component name into `library/`.
 */
export function qualifyReference(reference: ImageReference, domain: string): ImageReference {
  const { domain: canonicalDomain, path } = canonicalHubName(domain, reference.path);
  return { ...reference, domain: canonicalDomain, path };
}

/** Adds the default tag when the reference has neither tag nor digest. */
export function withDefaultTag(reference: ImageReference): ImageReference {
  if (reference.tag !== undefined || reference.digest !== undefined) return reference;
  return { ...reference, tag: DEFAULT_TAG };
}

/** Returns true for `sha256:<64 hex>`. */
export function isImageId(text: string): boolean {
  return text.startsWith('sha256:') && SHA256_HEX.test(text.slice('sha256:'.length));
}

/** Checks a digest string: `sha256:` with 64 lowercase hex characters (the only algorithm accepted). */
export function checkDigest(digest: string, fail: (reason: string) => never): void {
  if (!DIGEST.test(digest)) fail(`digest "${digest}" is not of the form algorithm:hex`);
  if (!digest.startsWith('sha256:')) fail(`digest "${digest}" uses an unsupported algorithm (supported: sha256)`);
  if (!SHA256_HEX.test(digest.slice('sha256:'.length))) fail(`digest "${digest}" must have 64 lowercase hex characters after "sha256:"`);
}

function canonicalHubName(domain: string, path: string): { domain: string; path: string } {
  const hub = DOCKER_HUB_ALIASES.has(domain) ? DOCKER_HUB : domain;
  if (hub === DOCKER_HUB && !path.includes('/')) return { domain: hub, path: `${DOCKER_HUB_OFFICIAL}/${path}` };
  return { domain: hub, path };
}
