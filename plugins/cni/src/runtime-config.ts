import { InvalidArgumentError, type PodNetworkRequest } from '@berth/core';
import { parseQuantity } from './quantity.js';

export const INGRESS_BANDWIDTH_ANNOTATION = 'kubernetes.io/ingress-bandwidth';
export const EGRESS_BANDWIDTH_ANNOTATION = 'kubernetes.io/egress-bandwidth';

/** The kubelet accepts bandwidth annotations between 1k and 1P bits per second. */
const MIN_BANDWIDTH = 1e3;
const MAX_BANDWIDTH = 1e15;

/** Burst floor in bits (64 KiB): a bucket smaller than one full-size packet would pass nothing. */
const MIN_BURST_BITS = 64 * 1024 * 8;

/** Burst ceiling in bits (2 GiB): the bandwidth plugin rejects bursts of 4 GiB and more. */
const MAX_BURST_BITS = 2 ** 34;

/** `runtimeConfig.portMappings` entry of the portMappings capability. */
export interface CniPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

/** `runtimeConfig.bandwidth` of the bandwidth capability: rates in bits per second, bursts in bits. */
export interface CniBandwidth {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

export interface CniDns {
  servers: string[];
  searches: string[];
  options: string[];
}

/** Values for plugins that declare the matching capability, keyed by capability name. */
export interface CapabilityArgs {
  portMappings?: CniPortMapping[];
  bandwidth?: CniBandwidth;
  dns?: CniDns;
}

/** Everything about one pod that goes into a plugin invocation besides the network config. */
export interface RuntimeArgs {
  containerId: string;
  ifName: string;
  /** CNI_ARGS: the Kubernetes pod identity as `KEY=VALUE` pairs joined by `;`. */
  cniArgs: string;
  capabilityArgs: CapabilityArgs;
}

/**
 * Builds the CNI_ARGS value: the pod's name, namespace, uid and infra container id, with
 * IgnoreUnknown=1 so that plugins which take none of these keys accept them.
 */
export function buildCniArgs(request: Pick<PodNetworkRequest, 'sandboxId' | 'podName' | 'podNamespace' | 'podUid'>): string {
  const pairs: [string, string][] = [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', request.podNamespace],
    ['K8S_POD_NAME', request.podName],
    ['K8S_POD_INFRA_CONTAINER_ID', request.sandboxId],
    ['K8S_POD_UID', request.podUid],
  ];
  for (const [key, value] of pairs) {
    if (/[;=]/.test(value)) {
      throw new InvalidArgumentError(`pod sandbox ${request.sandboxId}: ${key} value ${JSON.stringify(value)} must not contain ";" or "=" (it is passed in CNI_ARGS)`);
    }
  }
  return pairs.map(([key, value]) => `${key}=${value}`).join(';');
}

/**
 * Builds the capability arguments: port mappings that have a host port, the bandwidth limits of
 * the pod's annotations and the pod's DNS settings. Throws InvalidArgumentError for an annotation
 * that is not a quantity in range.
 */
export function buildCapabilityArgs(request: PodNetworkRequest): CapabilityArgs {
  const args: CapabilityArgs = {};

  const mappings = request.portMappings
    .filter((mapping) => mapping.hostPort > 0)
    .map((mapping): CniPortMapping => {
      const entry: CniPortMapping = {
        hostPort: mapping.hostPort,
        containerPort: mapping.containerPort,
        protocol: mapping.protocol.toLowerCase(),
      };
      if (mapping.hostIp !== '') entry.hostIP = mapping.hostIp;
      return entry;
    });
  if (mappings.length > 0) args.portMappings = mappings;

  const bandwidth = bandwidthFromAnnotations(request.sandboxId, request.annotations);
  if (bandwidth) args.bandwidth = bandwidth;

  const dns = request.dns;
  if (dns && (dns.servers.length > 0 || dns.searches.length > 0 || dns.options.length > 0)) {
    args.dns = { servers: [...dns.servers], searches: [...dns.searches], options: [...dns.options] };
  }
  return args;
}

/** Reads the bandwidth annotations; undefined when the pod has neither. */
export function bandwidthFromAnnotations(sandboxId: string, annotations: Record<string, string>): CniBandwidth | undefined {
  const ingress = readRate(sandboxId, annotations, INGRESS_BANDWIDTH_ANNOTATION);
  const egress = readRate(sandboxId, annotations, EGRESS_BANDWIDTH_ANNOTATION);
  if (ingress === undefined && egress === undefined) return undefined;

  // The bandwidth plugin needs a burst with every rate. One tenth of a second at the rate keeps
  // the limit close to the average over short transfers.
  const bandwidth: CniBandwidth = {};
  if (ingress !== undefined) {
    bandwidth.ingressRate = ingress;
    bandwidth.ingressBurst = burstFor(ingress);
  }
  if (egress !== undefined) {
    bandwidth.egressRate = egress;
    bandwidth.egressBurst = burstFor(egress);
  }
  return bandwidth;
}

function readRate(sandboxId: string, annotations: Record<string, string>, key: string): number | undefined {
  const text = annotations[key];
  if (text === undefined) return undefined;

  const value = parseQuantity(text);
  if (value === undefined) {
    throw new InvalidArgumentError(
      `pod sandbox ${sandboxId}: annotation ${key}: ${JSON.stringify(text)} is not a quantity (examples: 500k, 10M, 1G)`,
    );
  }
  if (value < MIN_BANDWIDTH || value > MAX_BANDWIDTH) {
    throw new InvalidArgumentError(
      `pod sandbox ${sandboxId}: annotation ${key}: ${JSON.stringify(text)} is out of range (allowed: 1k to 1P bits per second)`,
    );
  }
  return Math.round(value);
}

function burstFor(rate: number): number {
  return Math.min(Math.max(Math.ceil(rate / 10), MIN_BURST_BITS), MAX_BURST_BITS);
}
