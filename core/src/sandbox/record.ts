import type { PodSandboxConfig__Output } from '../cri/generated/runtime/v1/PodSandboxConfig.js';
import type { PinnedKind } from './namespaces.js';

/** The pod's mode for each namespace, in CRI NamespaceMode terms. */
export interface PodNamespaceModes {
  network: 'POD' | 'NODE';
  pid: 'POD' | 'CONTAINER' | 'NODE';
  ipc: 'POD' | 'NODE';
}

/**
 * The persisted state of one pod sandbox (`<root>/sandboxes/<id>.json`). `creating` marks a
 * sandbox whose RunPodSandbox has not finished: start-up recovery releases whatever such a
 * record names and deletes it, so a crash mid-create leaves nothing behind.
 */
export interface SandboxRecord {
  id: string;
  state: 'creating' | 'ready' | 'notready';
  /** Unix time in nanoseconds, as a decimal string (JSON has no 64-bit integers). */
  createdAtNs: string;
  runtimeHandler: string;
  /** The RunPodSandbox config as received, for status, labels and container defaults. */
  config: PodSandboxConfig__Output;
  hostname: string;
  namespaces: PodNamespaceModes;
  /** Sysctls (dotted names) applied to every container of the pod. */
  sysctls: Record<string, string>;
  /** `<runroot>/sandboxes/<id>`: pinned namespaces, /dev/shm, hostname, resolv.conf, hosts. */
  dir: string;
  pinned: Partial<Record<PinnedKind, string>>;
  /** The pod's /dev/shm tmpfs; undefined for a pod in the host IPC namespace. */
  shmPath?: string;
  cgroupParent: string;
  /** True when berth made the cgroup parent and removes it with the pod. */
  ownsCgroupParent: boolean;
  ips: string[];
  networkSetUp: boolean;
  /** Milliseconds the network provider took to set the pod up. */
  networkSetupMs?: number;
  /** Container that keeps the pod's PID namespace alive, for pods with POD-level PID sharing. */
  infraContainerId?: string;
}

/** The key that must be unique among sandboxes, as the kubelet builds pod names. */
export function sandboxNameKey(config: PodSandboxConfig__Output): string {
  const metadata = config.metadata;
  return [metadata?.name, metadata?.namespace, metadata?.uid, metadata?.attempt ?? 0].join('_');
}
