import { readFile } from 'node:fs/promises';
import { errorMessage, InvalidArgumentError, isErrno } from '../errors.js';
import type { RegistryAuth } from './store.js';

/** Credentials of one registry or repository, as stored in an auth file. */
interface AuthEntry {
  auth?: string;
  identitytoken?: string;
  username?: string;
  password?: string;
}

/**
 * Credentials from a file in the containers-auth.json(5) or Docker config.json format:
 * `{"auths": {"<registry>[/<repository>]": {"auth": "<base64 user:password>", "identitytoken": "..."}}}`.
 */
export class AuthFile {
  private constructor(
    readonly file: string,
    private readonly entries: Map<string, AuthEntry>,
  ) {}

  /** An auth file with no entries, for an empty `image.auth_file`. */
  static empty(): AuthFile {
    return new AuthFile('', new Map());
  }

  /**
   * Reads and checks `file`. A missing file has no entries. Errors name the file and key but never
   * include a credential.
   */
  static async load(file: string): Promise<AuthFile> {
    if (file === '') return AuthFile.empty();

    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return new AuthFile(file, new Map());
      throw new InvalidArgumentError(`${file}: cannot read auth file: ${errorMessage(err)}`);
    }
    return AuthFile.parse(text, file);
  }

  static parse(text: string, file: string): AuthFile {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new InvalidArgumentError(`${file}: auth file is not valid JSON`);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw new InvalidArgumentError(`${file}: auth file must be a JSON object with an "auths" object`);
    }

    const auths = (data as { auths?: unknown }).auths ?? {};
    if (typeof auths !== 'object' || auths === null || Array.isArray(auths)) {
      throw new InvalidArgumentError(`${file}: "auths" must be an object keyed by registry`);
    }

    const entries = new Map<string, AuthEntry>();
    for (const [key, value] of Object.entries(auths as Record<string, unknown>)) {
      if (typeof value !== 'object' || value === null) throw new InvalidArgumentError(`${file}: auths."${key}" must be an object`);
      const entry = value as Record<string, unknown>;
      for (const field of ['auth', 'identitytoken', 'username', 'password']) {
        if (entry[field] !== undefined && typeof entry[field] !== 'string') {
          throw new InvalidArgumentError(`${file}: auths."${key}".${field} must be a string`);
        }
      }
      entries.set(normaliseKey(key), entry as AuthEntry);
    }
    return new AuthFile(file, entries);
  }

  /**
   * Returns the credentials for `repository` on `host`: the most specific key wins, from
   * `host/namespace/name` down to `host`. Undefined when no key matches.
   */
  lookup(host: string, repository: string): RegistryAuth | undefined {
    const parts = repository.split('/');
    for (let length = parts.length; length >= 0; length--) {
      const key = length === 0 ? host : `${host}/${parts.slice(0, length).join('/')}`;
      const entry = this.entries.get(key);
      if (!entry) continue;

      const auth: RegistryAuth = { serverAddress: key };
      if (entry.auth) auth.auth = entry.auth;
      if (entry.username) auth.username = entry.username;
      if (entry.password) auth.password = entry.password;
      if (entry.identitytoken) auth.identityToken = entry.identitytoken;
      return auth;
    }
    return undefined;
  }
}

/**
 * Maps the key spellings that Docker writes to the `host[/path]` form: a URL scheme and a trailing
 * `/v1/` or `/v2/` are dropped, and Docker Hub's legacy index host means docker.io.
 */
function normaliseKey(key: string): string {
  let normal = key.replace(/^https?:\/\//, '').replace(/\/+$/, '');
  normal = normal.replace(/\/v[12]$/, '');
  if (normal === 'index.docker.io' || normal === 'registry-1.docker.io') normal = 'docker.io';
  return normal;
}

/** Returns the username and password of credentials, decoding `auth` (base64 of `user:password`) when set. */
export function basicCredentials(auth: RegistryAuth): { username: string; password: string } | undefined {
  if (auth.username) return { username: auth.username, password: auth.password ?? '' };
  if (!auth.auth) return undefined;

  const decoded = Buffer.from(auth.auth, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) {
    throw new InvalidArgumentError('auth: the value must be base64 of "username:password"; the decoded value has no username');
  }
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
