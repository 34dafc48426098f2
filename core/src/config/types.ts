import type { LogLevel } from '../log.js';

export interface RuntimeHandlerConfig {
  driver: string;
  options: Record<string, unknown>;
}

/** The effective configuration, shaped by schemas/config.schema.json with every default applied. */
export interface BerthConfig {
  listen: string;
  root: string;
  runroot: string;
  log_level: LogLevel;
  plugin_dirs: string[];
  plugins: Record<string, Record<string, unknown>>;
  default_runtime: string;
  runtimes: Record<string, RuntimeHandlerConfig>;
  runtime: {
    conmon: string;
    exec_sync_max_output_bytes: number;
    restrict_oom_score_adj: boolean;
    shm_size: number;
    stop_timeout_seconds: number;
    container_exits_dir: string;
    cgroup_parent: string;
    default_capabilities: string[];
    pause_image: string;
    pids_limit: number;
  };
  image: {
    registries_conf: string;
    registries_conf_dir: string;
    auth_file: string;
    certs_dir: string;
    pinned_images: string[];
    max_concurrent_downloads: number;
    pull_retries: number;
    worker_idle_seconds: number;
  };
  network: {
    provider: string;
  };
  seccomp: {
    provider: string;
    profile: string;
    unconfined_when_unspecified: boolean;
  };
}
