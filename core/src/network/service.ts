import type { NetworkProvider, NetworkStatus, PodNetworkRequest, PodNetworkResult } from './provider.js';

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

  /**
   * Connects a pod's pinned network namespace through the provider and returns its IPs. Without
   * a provider the pod keeps a namespace with only loopback up and gets no IP.
   */
  async setUp(request: PodNetworkRequest): Promise<PodNetworkResult> {
    if (!this.provider) {
      request.log.debug('no network provider configured; the pod gets loopback only');
      return { ips: [] };
    }
    return this.provider.setUp(request);
  }

  /** Disconnects a pod and releases its addresses; idempotent, a no-op without a provider. */
  async tearDown(request: PodNetworkRequest): Promise<void> {
    await this.provider?.tearDown(request);
  }

  async close(): Promise<void> {
    await this.provider?.close();
  }
}
