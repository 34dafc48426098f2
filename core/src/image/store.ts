import type { Logger } from '../log.js';

/** Credentials from `PullImageRequest.auth`; never logged. */
export interface RegistryAuth {
  username?: string;
  password?: string;
  /** base64 of `username:password`, as in a Docker config file. */
  auth?: string;
  serverAddress?: string;
  identityToken?: string;
  registryToken?: string;
}

/** The parts of an OCI image config (`application/vnd.oci.image.config.v1+json`) the runtime uses. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  config?: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    Volumes?: Record<string, object>;
    ExposedPorts?: Record<string, object>;
    Labels?: Record<string, string>;
    StopSignal?: string;
  };
  rootfs: { type: string; diff_ids: string[] };
  history?: unknown[];
  created?: string;
}

export interface ImageRecord {
  /** The image ID: the digest of its config blob (`sha256:…`). */
  id: string;
  /** Normalised tagged names, e.g. `docker.io/library/busybox:latest`. */
  repoTags: string[];
  /** `name@digest` of each manifest the image was pulled by. */
  repoDigests: string[];
  /** Sum of the uncompressed layer sizes, in bytes. */
  size: number;
  /** Chain IDs of the layers, lowest first. */
  chainIds: string[];
  config: ImageConfig;
  pinned: boolean;
}

export interface PullOptions {
  auth?: RegistryAuth;
  log: Logger;
}

export interface FilesystemUsage {
  /** Mount point of the filesystem that contains the store. */
  mountpoint: string;
  usedBytes: number;
  inodesUsed: number;
  timestampNs: bigint;
}

/** The overlay root filesystem of one container. */
export interface RootfsMount {
  containerId: string;
  /** Where the overlay is mounted; the bundle's `root.path`. */
  path: string;
  upperDir: string;
  workDir: string;
}

/**
 * The image store: pulls images into a content-addressed layer store and mounts their layers
 * as overlay root filesystems.
 */
export interface ImageStore {
  /**
   * Pulls `reference` (any form the kubelet sends; normalised by the store) and returns its record.
   * Concurrent pulls of one image share one download. A failed pull leaves nothing behind.
   * Throws InvalidArgumentError for a reference that cannot be parsed and NotFoundError when no
   * registry has it.
   */
  pull(reference: string, options: PullOptions): Promise<ImageRecord>;

  /** Lists stored images; `reference`, when given, keeps only the image it resolves to. */
  list(reference?: string): Promise<ImageRecord[]>;

  /** Resolves an image ID, ID prefix, tag or digest reference; undefined when absent. */
  get(reference: string): Promise<ImageRecord | undefined>;

  /**
   * Removes the image `reference` names. A tag reference removes only that tag while the image
   * has other tags. A repo digest reference removes only that repo digest while the image has a
   * tag or another repo digest. An image ID removes the whole image.
   * Idempotent: an unknown image is success. Throws FailedPreconditionError when the removal
   * would delete or unpin an image that image.pinned_images names, or delete one that a container
   * uses.
   */
  remove(reference: string, log: Logger): Promise<void>;

  /** Usage of the filesystem holding the layer store. */
  filesystemUsage(): Promise<FilesystemUsage>;

  /**
   * Creates and mounts the overlay rootfs of a container from the image's layers. Idempotent for
   * one container id. The image stays in use (cannot be removed) until `removeRootfs`.
   */
  createRootfs(containerId: string, imageId: string, log: Logger): Promise<RootfsMount>;

  /** Mounts the rootfs again after a host reboot or unmount; no-op when mounted. */
  mountRootfs(containerId: string, log: Logger): Promise<RootfsMount>;

  /** Unmounts and deletes the container's rootfs; idempotent. */
  removeRootfs(containerId: string, log: Logger): Promise<void>;

  /** Bytes and inodes used by the container's writable layer. */
  rootfsUsage(containerId: string): Promise<{ usedBytes: number; inodesUsed: number }>;

  /** Stops background workers and closes registry connections; mounted rootfs stay mounted. */
  close(): Promise<void>;
}
