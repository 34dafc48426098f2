import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { lstat, mkdir, readdir, readFile, readlink, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { BerthError, errorMessage, InternalError, InvalidArgumentError, isErrno } from '../errors.js';
import { ExtractionError, type ExtractResult } from './extract-protocol.js';
import { layerCompression, type Descriptor } from './manifest.js';
import type { ResolvedImage } from './puller.js';
import { formatReference, isImageId, parseReference, repositoryName, type ImageReference } from './reference.js';
import { UnsafeEntryError } from './tar-paths.js';
import type { LayerDownloadHandle, WorkerPool } from './worker-pool.js';
import type { ImageConfig } from './store.js';
import { AsyncMutex, Semaphore } from './sync.js';

/** One extracted layer, stored as `layers/<chain ID hex>/`. */
export interface LayerRecord {
  chainId: string;
  diffId: string;
  parent?: string;
  /** Name of the layer's short link in `l/`, which keeps overlay lowerdir strings short. */
  link: string;
  /** Size of the uncompressed tar, in bytes. */
  tarBytes: number;
  /** Bytes of file content and inodes the extracted layer uses. */
  usedBytes: number;
  inodes: number;
}

/** What the store keeps about an image, saved as `images/<id hex>.json`. */
export interface StoredImage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  /** Digests of the manifests and indexes the image was pulled by, for lookups by digest. */
  digests: string[];
  chainIds: string[];
  size: number;
  config: ImageConfig;
  pulledAt: string;
}

/**
 * The on-disk layout of the store and its in-memory index. Layers and image records are written
 * to `tmp/` first and renamed into place, so a crash leaves either the old or the new state.
 * `open()` deletes what a crash left in `tmp/` and the layers no image references.
 */
export class LayerStore {
  readonly tmpDir: string;
  readonly layersDir: string;
  readonly linksDir: string;
  readonly imagesDir: string;
  readonly layers = new Map<string, LayerRecord>();
  readonly images = new Map<string, StoredImage>();
  /** Locks layers against garbage collection while a pull or a rootfs uses them (chain ID → count). */
  private readonly layerRefs = new Map<string, number>();
  private readonly layerJobs = new Map<string, Promise<LayerRecord>>();
  readonly mutex = new AsyncMutex();

  constructor(
    readonly dir: string,
    private readonly pool: WorkerPool,
    private readonly downloads: Semaphore,
    private readonly log: Logger,
  ) {
    this.tmpDir = path.join(dir, 'tmp');
    this.layersDir = path.join(dir, 'layers');
    this.linksDir = path.join(dir, 'l');
    this.imagesDir = path.join(dir, 'images');
  }

  /** Creates the layout, removes what a crash left in `tmp/` and loads layers and image records. */
  async open(): Promise<void> {
    for (const dir of [this.dir, this.tmpDir, this.layersDir, this.linksDir, this.imagesDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
    for (const name of await readdir(this.tmpDir)) {
      await rm(path.join(this.tmpDir, name), { recursive: true, force: true });
      this.log.info({ path: path.join(this.tmpDir, name) }, 'removed temporary file left by an interrupted operation');
    }

    await this.loadLayers();
    await this.repairLinks();
    await this.loadImages();
  }

  /** Returns the host directory holding a layer's files. */
  diffDir(chainId: string): string {
    return path.join(this.layersDir, hex(chainId), 'diff');
  }

  /** Returns a fresh directory under `tmp/`, removed at the next start if a crash leaves it. */
  async tempDir(prefix: string): Promise<string> {
    const dir = path.join(this.tmpDir, `${prefix}-${randomBytes(6).toString('hex')}`);
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Moves `target` to `tmp/` (atomic) and deletes it there, so a half-deleted tree is never in place. */
  async discard(target: string): Promise<void> {
    const trash = path.join(this.tmpDir, `trash-${randomBytes(6).toString('hex')}`);
    try {
      await rename(target, trash);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    await rm(trash, { recursive: true, force: true });
  }

  referenceLayers(chainIds: string[]): void {
    for (const chainId of chainIds) this.layerRefs.set(chainId, (this.layerRefs.get(chainId) ?? 0) + 1);
  }

  releaseLayers(chainIds: string[]): void {
    for (const chainId of chainIds) {
      const count = (this.layerRefs.get(chainId) ?? 0) - 1;
      if (count <= 0) this.layerRefs.delete(chainId);
      else this.layerRefs.set(chainId, count);
    }
  }

  /**
   * Makes every layer of a resolved image present. Layers download and unpack in parallel
   * (bounded by the download semaphore) and are published in layer order, because each is checked
   * against the ones below first. A layer that another pull is already fetching is awaited, not
   * fetched again.
   */
  async ensureLayers(resolved: ResolvedImage, chainIds: string[], log: Logger, signal?: AbortSignal): Promise<LayerRecord[]> {
    const diffIds = resolved.config.rootfs.diff_ids;
    const jobs: Promise<LayerRecord>[] = [];
    for (const [index, descriptor] of resolved.manifest.layers.entries()) {
      const chainId = chainIds[index]!;
      const parentJob = index > 0 ? jobs[index - 1]! : undefined;
      jobs.push(this.ensureLayer(resolved, descriptor, chainId, diffIds[index]!, chainIds.slice(0, index).reverse(), parentJob, log, signal));
    }

    const results = await Promise.allSettled(jobs);
    const failure = results.find((result) => result.status === 'rejected');
    if (failure) throw (failure as PromiseRejectedResult).reason;
    return results.map((result) => (result as PromiseFulfilledResult<LayerRecord>).value);
  }

  private ensureLayer(
    resolved: ResolvedImage,
    descriptor: Descriptor,
    chainId: string,
    diffId: string,
    lowerChainIds: string[],
    parentJob: Promise<LayerRecord> | undefined,
    log: Logger,
    signal?: AbortSignal,
  ): Promise<LayerRecord> {
    const existing = this.layers.get(chainId);
    if (existing) return Promise.resolve(existing);
    const running = this.layerJobs.get(chainId);
    if (running) return running;

    const job = this.fetchLayer(resolved, descriptor, chainId, diffId, lowerChainIds, parentJob, log, signal).finally(() => {
      this.layerJobs.delete(chainId);
    });
    this.layerJobs.set(chainId, job);
    return job;
  }

  private async fetchLayer(
    resolved: ResolvedImage,
    descriptor: Descriptor,
    chainId: string,
    diffId: string,
    lowerChainIds: string[],
    parentJob: Promise<LayerRecord> | undefined,
    log: Logger,
    signal?: AbortSignal,
  ): Promise<LayerRecord> {
    const where = `image "${formatReference(resolved.reference)}" layer ${descriptor.digest}`;
    const compression = layerCompression(descriptor.mediaType, where);
    const started = Date.now();
    const state: { work?: string; download?: LayerDownloadHandle } = {};
    try {
      // run() queues before this function first awaits, so the slots go out in layer order and
      // the lowest layers, which the others wait for, arrive first.
      const result = await this.downloads.run(async () => {
        const work = await this.tempDir('layer');
        state.work = work;
        const diff = path.join(work, 'diff');
        await mkdir(diff, { mode: 0o755 });
        const download = this.pool.startLayer({ targetDir: diff, compression, digest: descriptor.digest, size: descriptor.size });
        state.download = download;
        return this.downloadLayer(resolved, descriptor, download, where, signal);
      });
      const { work, download } = state as Required<typeof state>;
      log.debug({ blob: descriptor.digest, bytes: descriptor.size, duration_ms: Date.now() - started }, 'layer blob downloaded and unpacked');
      if (result.diffId !== diffId) {
        throw new InvalidArgumentError(`${where}: the uncompressed content has digest ${result.diffId}, but the config's rootfs.diff_ids gives ${diffId}`);
      }

      const record: LayerRecord = {
        chainId,
        diffId,
        link: await this.newLinkName(),
        tarBytes: result.tarBytes,
        usedBytes: result.usedBytes,
        inodes: result.inodes,
      };
      if (lowerChainIds[0] !== undefined) record.parent = lowerChainIds[0];
      await writeFile(path.join(work, 'layer.json'), JSON.stringify(record));

      // The flush runs while the layers below may still be arriving, so the flushes of a pull
      // overlap instead of queueing behind the publishing order.
      await download.sync(work).catch((err: unknown) => {
        throw new InternalError(`${where}: flushing the layer to disk failed: ${errorMessage(err)}`, { cause: err });
      });

      // The layers below must be in place before the checks against them.
      if (parentJob) await parentJob;
      await withLayerErrors(where, () => download.finish(lowerChainIds.map((id) => this.diffDir(id)), work));

      // Publishing order: the layer directory first (atomic rename), then its link. open()
      // recreates a link that a crash lost in between.
      await rename(work, path.join(this.layersDir, hex(chainId)));
      await symlink(path.join('..', 'layers', hex(chainId), 'diff'), path.join(this.linksDir, record.link));
      this.layers.set(chainId, record);
      log.info({ layer: chainId, blob: descriptor.digest, bytes: result.tarBytes, duration_ms: Date.now() - started }, 'layer stored');
      return record;
    } catch (err) {
      await state.download?.abort();
      const work = state.work;
      if (work !== undefined) {
        await rm(work, { recursive: true, force: true }).catch((cleanupErr: unknown) =>
          log.warn({ path: work, err: cleanupErr }, 'cannot remove temporary layer directory'),
        );
      }
      throw err;
    }
  }

  /** Streams the blob into its worker until it is complete, retrying as the registry session decides. */
  private async downloadLayer(resolved: ResolvedImage, descriptor: Descriptor, download: LayerDownloadHandle, where: string, signal?: AbortSignal): Promise<ExtractResult> {
    let result: ExtractResult | undefined;
    await withLayerErrors(where, () =>
      resolved.session.fetchBlob(
        descriptor.digest,
        async (request) => {
          const fetched = await download.fetch(request);
          result = fetched.result;
          return fetched.attempt;
        },
        signal,
      ),
    );
    if (!result) throw new InternalError(`${where}: the download ended without an unpacked layer`);
    return result;
  }

  /** Writes an image record atomically and indexes it. */
  async saveImage(image: StoredImage): Promise<void> {
    const file = path.join(this.imagesDir, `${hex(image.id)}.json`);
    const temporary = path.join(this.tmpDir, `image-${hex(image.id)}-${randomBytes(4).toString('hex')}.json`);
    await writeFile(temporary, JSON.stringify(image, null, 2), { mode: 0o600 });
    await rename(temporary, file);
    this.images.set(image.id, image);
  }

  async deleteImage(id: string): Promise<void> {
    try {
      await unlink(path.join(this.imagesDir, `${hex(id)}.json`));
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    this.images.delete(id);
  }

  /**
   * Deletes every layer that no image, running pull or rootfs references. Call with the mutex
   * held. A pull references its layers without the mutex, so each layer's references are read
   * just before it is deleted, not once before the first deletion.
   */
  async collectGarbage(log: Logger): Promise<void> {
    const imageLayers = new Set<string>();
    for (const image of this.images.values()) for (const chainId of image.chainIds) imageLayers.add(chainId);
    for (const [chainId, record] of [...this.layers]) {
      if (imageLayers.has(chainId) || this.layerRefs.has(chainId) || this.layerJobs.has(chainId)) continue;
      this.layers.delete(chainId);
      await unlink(path.join(this.linksDir, record.link)).catch(() => undefined);
      await this.discard(path.join(this.layersDir, hex(chainId)));
      log.info({ layer: chainId }, 'unused layer deleted');
    }
  }

  /** Finds the stored image a reference names: an ID, a unique ID prefix, a tag or a digest. */
  findImage(reference: string, candidates: (parsed: ReturnType<typeof parseReference>) => ImageReference[]): { image: StoredImage; matched: string; kind: 'id' | 'tag' | 'digest' } | undefined {
    if (isImageId(reference)) {
      const image = this.images.get(reference);
      return image ? { image, matched: reference, kind: 'id' } : undefined;
    }
    if (/^[a-f0-9]{12,64}$/.test(reference)) {
      const matches = [...this.images.values()].filter((image) => hex(image.id).startsWith(reference));
      if (matches.length === 1) return { image: matches[0]!, matched: matches[0]!.id, kind: 'id' };
    }

    let parsed;
    try {
      parsed = parseReference(reference);
    } catch (err) {
      if (/^[a-f0-9]{64}$/.test(reference)) return undefined;
      throw err;
    }

    for (const candidate of candidates(parsed)) {
      const name = repositoryName(candidate);
      if (candidate.digest !== undefined) {
        const text = `${name}@${candidate.digest}`;
        for (const image of this.images.values()) {
          if (image.repoDigests.includes(text) || (image.digests.includes(candidate.digest) && image.repoDigests.some((d) => d.startsWith(`${name}@`)))) {
            return { image, matched: text, kind: 'digest' };
          }
        }
        continue;
      }
      const text = `${name}:${candidate.tag ?? 'latest'}`;
      for (const image of this.images.values()) {
        if (image.repoTags.includes(text)) return { image, matched: text, kind: 'tag' };
      }
    }
    return undefined;
  }

  /** Sum of the layers' and records' usage, for ImageFsInfo. */
  usage(): { usedBytes: number; inodes: number } {
    let usedBytes = 0;
    let inodes = this.images.size;
    for (const layer of this.layers.values()) {
      usedBytes += layer.usedBytes;
      inodes += layer.inodes;
    }
    return { usedBytes, inodes };
  }

  private async loadLayers(): Promise<void> {
    for (const name of await readdir(this.layersDir)) {
      const dir = path.join(this.layersDir, name);
      try {
        const record = JSON.parse(await readFile(path.join(dir, 'layer.json'), 'utf8')) as LayerRecord;
        if (hex(record.chainId) !== name) throw new Error(`layer.json names chain ID ${record.chainId}`);
        await lstat(path.join(dir, 'diff'));
        this.layers.set(record.chainId, record);
      } catch (err) {
        this.log.warn({ path: dir, err: errorMessage(err) }, 'unreadable layer directory deleted');
        await this.discard(dir);
      }
    }
  }

  private async repairLinks(): Promise<void> {
    const wanted = new Map<string, LayerRecord>();
    for (const record of this.layers.values()) wanted.set(record.link, record);

    for (const name of await readdir(this.linksDir)) {
      const record = wanted.get(name);
      const link = path.join(this.linksDir, name);
      const target = await readlink(link).catch(() => undefined);
      if (record && target === path.join('..', 'layers', hex(record.chainId), 'diff')) {
        wanted.delete(name);
        continue;
      }
      await unlink(link).catch(() => undefined);
    }
    for (const [name, record] of wanted) {
      await symlink(path.join('..', 'layers', hex(record.chainId), 'diff'), path.join(this.linksDir, name));
      this.log.info({ layer: record.chainId, link: name }, 'layer link restored');
    }
  }

  private async loadImages(): Promise<void> {
    for (const name of await readdir(this.imagesDir)) {
      const file = path.join(this.imagesDir, name);
      if (!name.endsWith('.json')) {
        await rm(file, { recursive: true, force: true });
        continue;
      }
      try {
        const image = JSON.parse(await readFile(file, 'utf8')) as StoredImage;
        const missing = image.chainIds.filter((chainId) => !this.layers.has(chainId));
        if (missing.length > 0) throw new Error(`layers ${missing.join(', ')} are missing`);
        this.images.set(image.id, image);
      } catch (err) {
        this.log.warn({ path: file, err: errorMessage(err) }, 'unusable image record deleted; pull the image again');
        await unlink(file).catch(() => undefined);
      }
    }
  }

  private async newLinkName(): Promise<string> {
    for (;;) {
      // 10 base32 characters: 50 bits, so collisions are rare and lowerdir entries stay short.
      const name = randomBytes(10).toString('base64url').replace(/[^A-Za-z0-9]/g, '').toUpperCase().slice(0, 10);
      if (name.length < 10) continue;
      try {
        await lstat(path.join(this.linksDir, name));
      } catch (err) {
        if (isErrno(err, 'ENOENT') && ![...this.layers.values()].some((layer) => layer.link === name)) return name;
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
  }
}

/** Runs a step of a layer download, turning the unpacking errors of the worker into typed errors. */
async function withLayerErrors<T>(where: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof UnsafeEntryError) {
      throw new InvalidArgumentError(`${where}: ${err.message}; the pull was stopped and nothing of it was kept`);
    }
    if (err instanceof ExtractionError || !(err instanceof BerthError)) {
      throw new InternalError(`${where}: extraction failed: ${errorMessage(err)}`, { cause: err });
    }
    throw err;
  }
}

/** Chain IDs of a layer stack: the first is its diff ID, each next is sha256("<parent> <diff ID>"). */
export function chainIds(diffIds: string[]): string[] {
  const result: string[] = [];
  for (const diffId of diffIds) {
    const parent = result[result.length - 1];
    result.push(parent === undefined ? diffId : `sha256:${createHash('sha256').update(`${parent} ${diffId}`).digest('hex')}`);
  }
  return result;
}

export function hex(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

/** Image worker processes: enough to keep both cores busy on a small node, at most 4. */
export function defaultWorkerCount(): number {
  return Math.max(2, Math.min(os.availableParallelism(), 4));
}
