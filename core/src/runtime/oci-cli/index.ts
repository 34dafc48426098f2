// The shared base of drivers for OCI runtimes with the runc command line. A vendor plugin for
// another such runtime calls createOciCliDriver with its binary name and host checks.
export { OciCliDriver, type OciCliDriverSettings } from './driver.js';
export { createOciCliDriver, discoverFeatures, type OciCliDriverSpec, type OciCliOptions } from './factory.js';
export { findExecutable } from './binary.js';
