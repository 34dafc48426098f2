import type { NetworkProvider, NetworkStatus } from './provider.js';

/**
 * The node's pod network: the configured provider, or none when `network.provider` is empty.
 * Sandboxes and `Status` go through this service so that neither has to handle a missing provider.
 */
export class PodNetworkService {
  constructor(readonly provider: NetworkProvider | undefined) {}

  async status(): Promise<NetworkStatus> {
    if (!this.provider) {
      return {
        ready: false,
        reason: 'NetworkProviderNotConfigured',
        message: 'no network provider is configured (network.provider is empty); pods can only use the host network',
      };
    }
    return this.provider.status();
  }

  async close(): Promise<void> {
    await this.provider?.close();
  }
}
