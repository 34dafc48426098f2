import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { BerthConfig } from '../config/types.js';
import { FailedPreconditionError, NotFoundError } from '../errors.js';
import { AuthFile } from './auth-file.js';
import { chainIds, defaultWorkerCount, LayerStore, type StoredImage } from './layer-store.js';
import { nodePlatform } from './manifest.js';
import { ImagePuller } from './puller.js';
import { formatReference, parseReference, repositoryName, type ImageReference, type ParsedReference } from './reference.js';
import { loadRegistriesConfig } from './registries-conf.js';
import { RegistryClient } from './registry-client.js';
import { mountPointOf, RootfsManager } from './rootfs.js';
import type { FilesystemUsage, ImageRecord, ImageStore, PullOptions, RootfsMount } from './store.js';
import { Semaphore } from './sync.js';
import { WorkerPool } from './worker-pool.js';

/**
 * The default ImageStore: pulls from OCI registries into a content-addressed layer store under
 * `<root>/images` and mounts container root filesystems with overlayfs.
 */
export class DefaultImageStore implements ImageStore {
  private readonly pulls = new Map<string, Promise<ImageRecord>>();

  private constructor(
    private readonly config: BerthConfig,
    private readonly layers: LayerStore,
    private readonly rootfs: RootfsManager,
    private readonly puller: ImagePuller,
    private readonly client: RegistryClient,
    private readonly pool: WorkerPool,
    readonly log: Logger,
  ) {}

  /**
   * Reads the registries configuration and auth file, opens the store and cleans up what an
   * interrupted pull or a crash left behind. Throws on an invalid registries.conf or auth file.
   */
  static async open(config: BerthConfig, log: Logger): Promise<DefaultImageStore> {
    const storeLog = log.child({ component: 'image-store' });
    const registries = await loadRegistriesConfig(config.image.registries_conf, config.image.registries_conf_dir);
    const authFile = await AuthFile.load(config.image.auth_file);
    storeLog.info(
      { registries_conf: registries.files, search_registries: registries.searchRegistries, auth_file: config.image.auth_file || undefined },
      'registries configuration loaded',
    );

    const pool = new WorkerPool({ size: defaultWorkerCount(), idleMs: config.image.worker_idle_seconds * 1000 }, storeLog);
    const client = new RegistryClient({ retries: config.image.pull_retries, certsDir: config.image.certs_dir });
    try {
      const layers = new LayerStore(path.resolve(config.root, 'images'), pool, new Semaphore(config.image.max_concurrent_downloads), storeLog);
      await layers.open();
      const rootfs = new RootfsManager(layers, storeLog);
      await rootfs.open();
      await layers.mutex.run(() => layers.collectGarbage(storeLog));

      const puller = new ImagePuller(registries, authFile, client, nodePlatform());
      storeLog.info({ path: layers.dir, images: layers.images.size, layers: layers.layers.size }, 'image store opened');
      return new DefaultImageStore(config, layers, rootfs, puller, client, pool, storeLog);
    } catch (err) {
      await pool.close();
      await client.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.client.close();
    await this.pool.close();
  }

  async pull(reference: string, options: PullOptions): Promise<ImageRecord> {
    const parsed = parseReference(reference);
    const key = `${formatReference(parsed.reference)}|${createHash('sha256').update(JSON.stringify(options.auth ?? {})).digest('hex')}`;

    // Concurrent pulls of one name with the same credentials share one pull.
    let pull = this.pulls.get(key);
    if (!pull) {
      pull = this.pullOnce(parsed, options).finally(() => this.pulls.delete(key));
      this.pulls.set(key, pull);
    } else {
      options.log.debug('joining a pull of the same image already in progress');
    }
    return pull;
  }

  private async pullOnce(parsed: ParsedReference, options: PullOptions): Promise<ImageRecord> {
    const log = options.log;
    const started = Date.now();
    const resolved = await this.puller.resolve(parsed, options.auth, log);
    const ids = chainIds(resolved.config.rootfs.diff_ids);

    this.layers.referenceLayers(ids);
    try {
      try {
        await this.layers.ensureLayers(resolved, ids, log);
      } catch (err) {
        // Keep the store as it was: layers this pull stored for nothing are deleted again.
        this.layers.releaseLayers(ids);
        await this.layers.mutex.run(() => this.layers.collectGarbage(log));
        this.layers.referenceLayers(ids);
        throw err;
      }

      const image = await this.layers.mutex.run(() => this.record(resolved.reference, resolved.topDigest, resolved.manifestDigest, resolved.configDigest, ids, resolved.config));
      log.info({ resolved_image: formatReference(resolved.reference), image_id: image.id, layers: ids.length, duration_ms: Date.now() - started }, 'image pulled');
      return this.toRecord(image);
    } finally {
      this.layers.releaseLayers(ids);
    }
  }

  /** Adds the pulled name to the image's record (creating it), and moves the tag off any other image. */
  private async record(
    reference: ImageReference,
    topDigest: string,
    manifestDigest: string,
    id: string,
    ids: string[],
    config: StoredImage['config'],
  ): Promise<StoredImage> {
    const name = repositoryName(reference);
    const tag = reference.digest === undefined ? `${name}:${reference.tag ?? 'latest'}` : undefined;

    if (tag !== undefined) {
      for (const other of this.layers.images.values()) {
        if (other.id === id || !other.repoTags.includes(tag)) continue;
        await this.layers.saveImage({ ...other, repoTags: other.repoTags.filter((existing) => existing !== tag) });
      }
    }

    const existing = this.layers.images.get(id);
    const size = ids.reduce((sum, chainId) => sum + (this.layers.layers.get(chainId)?.tarBytes ?? 0), 0);
    const image: StoredImage = existing
      ? structuredClone(existing)
      : { id, repoTags: [], repoDigests: [], digests: [], chainIds: ids, size, config, pulledAt: new Date().toISOString() };
    if (tag !== undefined && !image.repoTags.includes(tag)) image.repoTags.push(tag);
    const repoDigest = `${name}@${topDigest}`;
    if (!image.repoDigests.includes(repoDigest)) image.repoDigests.push(repoDigest);
    for (const digest of [topDigest, manifestDigest]) if (!image.digests.includes(digest)) image.digests.push(digest);
    await this.layers.saveImage(image);
    return image;
  }

  async list(reference?: string): Promise<ImageRecord[]> {
    if (reference !== undefined && reference !== '') {
      const found = await this.get(reference);
      return found ? [found] : [];
    }
    return [...this.layers.images.values()].map((image) => this.toRecord(image));
  }

  async get(reference: string): Promise<ImageRecord | undefined> {
    const found = this.find(reference);
    return found ? this.toRecord(found.image) : undefined;
  }

  async remove(reference: string, log: Logger): Promise<void> {
    await this.layers.mutex.run(async () => {
      const found = this.find(reference);
      if (!found) {
        log.debug('image to remove is not stored; nothing to do');
        return;
      }
      const { image, matched, kind } = found;

      // A tag reference untags while other tags remain, so the last tag removes the image as
      // `crictl rmi name:tag` expects. A repo digest reference keeps an image that still has a tag
      // or another repo digest.
      if (kind !== 'id') {
        const pinnedThroughName = this.pinnedReferences(image, matched);
        if (pinnedThroughName.length > 0) {
          throw new FailedPreconditionError(`${matched} of image ${image.id} is pinned by image.pinned_images (${pinnedThroughName.join(', ')}) and cannot be removed; remove the entry from the config first`);
        }
        const remaining = withoutName(image, matched, kind);
        const keepImage = kind === 'tag' ? remaining.repoTags.length > 0 : remaining.repoTags.length > 0 || remaining.repoDigests.length > 0;
        if (keepImage) {
          await this.layers.saveImage(remaining);
          log.info({ image_id: image.id, name: matched }, 'image name removed; the image keeps its other names');
          return;
        }
      }

      const pinnedBy = this.pinnedReferences(image);
      if (pinnedBy.length > 0) {
        throw new FailedPreconditionError(`image ${image.id} is pinned by image.pinned_images (${pinnedBy.join(', ')}) and cannot be removed; remove the entry from the config first`);
      }
      const users = this.rootfs.users(image.id);
      if (users.length > 0) {
        throw new FailedPreconditionError(`image ${image.id} is in use by the rootfs of container(s) ${users.join(', ')}; remove those containers first`);
      }

      await this.layers.deleteImage(image.id);
      await this.layers.collectGarbage(log);
      log.info({ image_id: image.id, reference }, 'image removed');
    });
  }

  async filesystemUsage(): Promise<FilesystemUsage> {
    const usage = this.layers.usage();
    return {
      mountpoint: await mountPointOf(this.layers.dir),
      usedBytes: usage.usedBytes,
      inodesUsed: usage.inodes,
      timestampNs: BigInt(Date.now()) * 1_000_000n,
    };
  }

  // Rootfs calls hold the store mutex, as remove() and garbage collection do. So an image cannot
  // be removed between its lookup and the rootfs that references its layers, and a mount cannot
  // land in a rootfs directory that is being deleted.
  async createRootfs(containerId: string, imageId: string, log: Logger): Promise<RootfsMount> {
    return this.layers.mutex.run(() => {
      const found = this.find(imageId);
      if (!found) throw new NotFoundError(`container ${containerId}: image "${imageId}" is not stored; pull it first`);
      return this.rootfs.create(containerId, found.image.id, found.image.chainIds, log);
    });
  }

  async mountRootfs(containerId: string, log: Logger): Promise<RootfsMount> {
    return this.layers.mutex.run(() => this.rootfs.mount(containerId, log));
  }

  async removeRootfs(containerId: string, log: Logger): Promise<void> {
    await this.layers.mutex.run(() => this.rootfs.remove(containerId, log));
  }

  async rootfsUsage(containerId: string): Promise<{ usedBytes: number; inodesUsed: number }> {
    return this.rootfs.usage(containerId);
  }

  private find(reference: string): ReturnType<LayerStore['findImage']> {
    return this.layers.findImage(reference, (parsed) => {
      try {
        return this.puller.candidates(parsed);
      } catch {
        // A short name that no search registry resolves can match no stored name.
        return [];
      }
    });
  }

  private isPinned(image: StoredImage): boolean {
    return this.pinnedReferences(image).length > 0;
  }

  /**
   * Returns the image.pinned_images entries that resolve to `image`. With `name`, returns only
   * those that resolve through that tag or repo digest, so removing the name would unpin the image.
   */
  private pinnedReferences(image: StoredImage, name?: string): string[] {
    return this.config.image.pinned_images.filter((pinned) => {
      let found;
      try {
        found = this.find(pinned);
      } catch {
        return false;
      }
      if (found?.image.id !== image.id) return false;
      return name === undefined || (found.kind !== 'id' && found.matched === name);
    });
  }

  private toRecord(image: StoredImage): ImageRecord {
    return {
      id: image.id,
      repoTags: [...image.repoTags],
      repoDigests: [...image.repoDigests],
      size: image.size,
      chainIds: [...image.chainIds],
      config: image.config,
      pinned: this.isPinned(image),
    };
  }
}

/** Returns `image` without the tag or repo digest `name`; the lookup digest goes too unless another repo digest uses it. */
function withoutName(image: StoredImage, name: string, kind: 'tag' | 'digest'): StoredImage {
  if (kind === 'tag') return { ...image, repoTags: image.repoTags.filter((tag) => tag !== name) };

  const digest = name.slice(name.lastIndexOf('@') + 1);
  const repoDigests = image.repoDigests.filter((repoDigest) => repoDigest !== name);
  const digestStillNamed = repoDigests.some((repoDigest) => repoDigest.endsWith(`@${digest}`));
  return { ...image, repoDigests, digests: digestStillNamed ? image.digests : image.digests.filter((d) => d !== digest) };
}
