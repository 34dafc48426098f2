import type { Logger } from '../log.js';
import type { OciSeccomp } from '../runtime/oci-spec.js';

/** A CRI `SecurityProfile`: RuntimeDefault, Unconfined or Localhost with a path. */
export interface SecurityProfileRequest {
  profileType: 'RuntimeDefault' | 'Unconfined' | 'Localhost';
  localhostRef?: string;
}

export interface SeccompContext {
  /** The container would run privileged; privileged containers are unconfined unless asked. */
  privileged: boolean;
  log: Logger;
}

/**
 * Turns a CRI seccomp profile into the OCI `linux.seccomp` section. Returns undefined for an
 * unconfined container. Throws InvalidArgumentError for a profile it cannot load, naming the
 * path and the invalid field.
 */
export interface SeccompProfileProvider {
  readonly name: string;
  /**
   * Returns the OCI seccomp section for a container's profile: undefined for Unconfined, the
   * RuntimeDefault profile, or the Localhost file read on every call. Throws InvalidArgumentError
   * naming the field for an unknown profile type or a missing, unreadable or invalid file.
   */
  resolve(profile: SecurityProfileRequest, context: SeccompContext): Promise<OciSeccomp | undefined>;
}

export interface SeccompProviderContext {
  log: Logger;
}

/** The value a `seccomp-profile-provider` plugin's entry module exports. */
export interface SeccompProfileProviderFactory {
  create(options: Record<string, unknown>, context: SeccompProviderContext): Promise<SeccompProfileProvider>;
}
