import type { NetworkProviderFactory } from '@berth/core';
import { resolveOptions } from './options.js';
import { CniNetworkProvider } from './provider.js';

/** Factory of the `cni` network provider; its options are the `[plugins.cni]` table. */
const factory: NetworkProviderFactory = {
  create: async (options, context) => CniNetworkProvider.create(resolveOptions(options), context),
};

export default factory;
export { CniNetworkProvider } from './provider.js';
export type { CniOptions } from './options.js';
