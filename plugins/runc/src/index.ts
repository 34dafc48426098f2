import { createOciCliDriver, type OciCliOptions, type RuntimeDriverFactory } from '@berth/core';

/** The runc runtime driver: the shared OCI-CLI driver with runc as the binary. */
const factory: RuntimeDriverFactory = {
  create: (options, context) => createOciCliDriver({ runtimeName: 'runc', options: options as OciCliOptions, context }),
};

export default factory;
