/** Kinds of implementation a plugin can provide; each maps to one core interface. */
export type ProvisionKind = 'runtime-driver' | 'network-provider' | 'seccomp-profile-provider';

/** One entry of a manifest's `provides` list. */
export interface ManifestProvision {
  kind: ProvisionKind;
  name: string;
  entry: string;
  optionsSchema?: string;
}

/** The contents of a plugin's `berth-plugin.json`, as schemas/plugin-manifest.schema.json defines it. */
export interface PluginManifest {
  name: string;
  version: string;
  description?: string;
  coreApi: string;
  provides: ManifestProvision[];
}

export const MANIFEST_FILE = 'berth-plugin.json';

/**
 * Version of the interfaces plugins build against (RuntimeDriver, NetworkProvider,
 * SeccompProfileProvider and their factories). A manifest's `coreApi` range must include it.
 */
export const CORE_API_VERSION = '1.0.0';
