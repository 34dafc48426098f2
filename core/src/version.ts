/** berth's own version, reported by `berth --version` and CRI Version.runtime_version. */
export const BERTH_VERSION = '0.1.0';
