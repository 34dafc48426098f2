import type { ContainerConfig__Output } from '../cri/generated/runtime/v1/ContainerConfig.js';
import type { LinuxContainerResources__Output } from '../cri/generated/runtime/v1/LinuxContainerResources.js';

/** CRI container states, as ContainerState names them (`creating` is berth's own, never reported). */
export type ContainerLifecycleState = 'creating' | 'created' | 'running' | 'exited';

/**
 * The persisted state of one container (`<root>/containers/<id>.json`). A record in
 * `creating` belongs to a CreateContainer that has not finished; start-up recovery removes
 * what it names and deletes it.
 */
export interface ContainerRecord {
  id: string;
  sandboxId: string;
  state: ContainerLifecycleState;
  /** Unix times in nanoseconds, as decimal strings. */
  createdAtNs: string;
  startedAtNs?: string;
  finishedAtNs?: string;
  exitCode?: number;
  /**
   * `Completed`, `Error` or `OOMKilled` once exited, and `StartError` when the start failed.
   * `Unknown` when an interrupted create could not be undone. Reports also show `Unknown` when
   * the container's runtime handler is no longer configured.
   */
  reason?: string;
  message?: string;
  /** The CreateContainer config as received. */
  config: ContainerConfig__Output;
  /** Image ID (config digest) the rootfs was made from. */
  imageId: string;
  /** Image name as the request gave it. */
  imageName: string;
  /** A repo digest of the image, or its ID when it has none. */
  imageRef: string;
  runtimeHandler: string;
  /** `<runroot>/containers/<id>`, holding config.json. */
  bundlePath: string;
  /** Host path of the CRI log; undefined when the pod has no log directory. */
  logPath?: string;
  cgroupsPath: string;
  /** Resources currently applied, updated by UpdateContainerResources. */
  resources: LinuxContainerResources__Output | null;
  user: { uid: number; gid: number; additionalGids: number[] };
  /**
   * Linux number of the signal StopContainer sends first, e.g. 15. Records written by older
   * builds store a name such as `SIGTERM`, which `storedStopSignal` translates on read.
   */
  stopSignal: number | string;
  /** True for the container that keeps a pod's PID namespace alive. */
  infra?: boolean;
}
