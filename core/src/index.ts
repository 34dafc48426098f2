// Public API of @berth/core for plugin packages: the interfaces they implement and the errors
// they throw. Keep this surface small; it is versioned by CORE_API_VERSION.
export * from './errors.js';
export type { Logger } from './log.js';
export type * from './runtime/driver.js';
export type * from './runtime/oci-spec.js';
export type * from './network/provider.js';
export type * from './seccomp/provider.js';
export type * from './image/store.js';
export { CORE_API_VERSION } from './plugins/manifest.js';
export * from './runtime/oci-cli/index.js';
export { detectCgroupLayout, parseCgroupMounts, type CgroupLayout } from './cgroups/layout.js';
export { KeyedMutex } from './util/keyed-mutex.js';
export { syncDirectory, writeJsonAtomic } from './state/json-file.js';
