import type { Logger } from '../log.js';

export interface PortMapping {
  protocol: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostPort: number;
  hostIp: string;
}

export interface PodNetworkRequest {
  sandboxId: string;
  podName: string;
  podNamespace: string;
  podUid: string;
  /** Path of the pinned network namespace, created by the core before `setUp`. */
  netnsPath: string;
  portMappings: PortMapping[];
  annotations: Record<string, string>;
  /** Pod DNS settings, passed to plugins that take `runtimeConfig.dns`. */
  dns?: { servers: string[]; searches: string[]; options: string[] };
  log: Logger;
}

export interface PodNetworkResult {
  /** Primary IP first, then additional IPs (IPv4 and IPv6 in dual stack). */
  ips: string[];
}

export interface NetworkStatus {
  ready: boolean;
  /** Short CamelCase reason when not ready, e.g. `NoNetworkConfig`. */
  reason?: string;
  message?: string;
}

/**
 * Wires pods to the node's network. The core creates and removes the network namespace; the
 * provider connects it.
 */
export interface NetworkProvider {
  readonly name: string;

  /** Readiness for the `NetworkReady` condition of `Status`. */
  status(): Promise<NetworkStatus>;

  /** Connects the pod's namespace. On failure, releases whatever the call set up before throwing. */
  setUp(request: PodNetworkRequest): Promise<PodNetworkResult>;

  /**
   * Disconnects the pod and releases its addresses. Idempotent, and must succeed when the
   * namespace is already gone or the daemon restarted since `setUp`.
   */
  tearDown(request: PodNetworkRequest): Promise<void>;

  /** Verifies the pod's network is still as set up; throws when it is not. */
  check?(request: PodNetworkRequest): Promise<void>;

  /** Stops watchers. */
  close(): Promise<void>;
}

export interface NetworkProviderContext {
  /** Directory for state that ends with a reboot, under the daemon's run root, created by the core. */
  stateDir: string;
  /**
   * Directory for state that must outlive a reboot, under the daemon's root, created by the core.
   * Address allocations of IPAM plugins outlive a reboot, so whatever DEL needs to release them
   * belongs here.
   */
  dataDir: string;
  log: Logger;
}

/** The value a `network-provider` plugin's entry module exports. */
export interface NetworkProviderFactory {
  create(options: Record<string, unknown>, context: NetworkProviderContext): Promise<NetworkProvider>;
}
