import { inject, injectable } from 'tsyringe';
import { Tokens } from '../di/tokens.js';
import { InvalidArgumentError } from '../errors.js';
import type { ImageRecord, ImageStore, RegistryAuth } from '../image/store.js';
import type { CriHandlerGroup, RequestContext, StreamHandler, UnaryHandler } from './handler.js';
import type { Image } from './generated/runtime/v1/Image.js';
import type { PullImageRequest__Output } from './generated/runtime/v1/PullImageRequest.js';
import type { PullImageResponse } from './generated/runtime/v1/PullImageResponse.js';
import type { ListImagesRequest__Output } from './generated/runtime/v1/ListImagesRequest.js';
import type { ListImagesResponse } from './generated/runtime/v1/ListImagesResponse.js';
import type { StreamImagesRequest__Output } from './generated/runtime/v1/StreamImagesRequest.js';
import type { ImageStatusRequest__Output } from './generated/runtime/v1/ImageStatusRequest.js';
import type { ImageStatusResponse } from './generated/runtime/v1/ImageStatusResponse.js';
import type { RemoveImageRequest__Output } from './generated/runtime/v1/RemoveImageRequest.js';
import type { RemoveImageResponse } from './generated/runtime/v1/RemoveImageResponse.js';
import type { ImageFsInfoResponse } from './generated/runtime/v1/ImageFsInfoResponse.js';
import type { AuthConfig__Output } from './generated/runtime/v1/AuthConfig.js';

/** Images per StreamImages message, so that a large store never needs one huge message. */
const STREAM_BATCH = 100;

/** The CRI ImageService: pull, list, status, remove and filesystem usage of the image store. */
@injectable()
export class ImageServiceHandlers implements CriHandlerGroup {
  readonly service = 'ImageService' as const;

  constructor(@inject(Tokens.ImageStore) private readonly images: ImageStore) {}

  unary(): Record<string, UnaryHandler> {
    return {
      PullImage: ((request: PullImageRequest__Output, context: RequestContext) => this.pullImage(request, context)) as UnaryHandler,
      ListImages: ((request: ListImagesRequest__Output) => this.listImages(request)) as UnaryHandler,
      ImageStatus: ((request: ImageStatusRequest__Output) => this.imageStatus(request)) as UnaryHandler,
      RemoveImage: ((request: RemoveImageRequest__Output, context: RequestContext) => this.removeImage(request, context)) as UnaryHandler,
      ImageFsInfo: (() => this.imageFsInfo()) as UnaryHandler,
    };
  }

  streams(): Record<string, StreamHandler> {
    return {
      StreamImages: ((request: StreamImagesRequest__Output, _context: RequestContext, send: (message: unknown) => void) =>
        this.streamImages(request, send)) as StreamHandler,
    };
  }

  private async pullImage(request: PullImageRequest__Output, context: RequestContext): Promise<PullImageResponse> {
    const reference = requireImage(request.image?.image, 'PullImageRequest.image.image');
    const auth = request.auth ? toRegistryAuth(request.auth) : undefined;
    const image = await this.images.pull(reference, { auth, log: context.log });
    return { image_ref: image.id };
  }

  private async listImages(request: ListImagesRequest__Output): Promise<ListImagesResponse> {
    const filter = request.filter?.image?.image ?? '';
    const images = await this.images.list(filter === '' ? undefined : filter);
    return { images: images.map(toCriImage) };
  }

  private async streamImages(request: StreamImagesRequest__Output, send: (message: unknown) => void): Promise<void> {
    const filter = request.filter?.image?.image ?? '';
    const images = (await this.images.list(filter === '' ? undefined : filter)).map(toCriImage);
    for (let start = 0; start < images.length; start += STREAM_BATCH) {
      send({ images: images.slice(start, start + STREAM_BATCH) });
    }
  }

  /** An image that is not stored is not an error: the response has no image, as the kubelet expects. */
  private async imageStatus(request: ImageStatusRequest__Output): Promise<ImageStatusResponse> {
    const reference = requireImage(request.image?.image, 'ImageStatusRequest.image.image');
    const image = await this.images.get(reference);
    if (!image) return { image: null, info: {} };

    const response: ImageStatusResponse = { image: toCriImage(image), info: {} };
    if (request.verbose) {
      response.info = {
        info: JSON.stringify({ id: image.id, chainIds: image.chainIds, imageSpec: image.config }),
      };
    }
    return response;
  }

  private async removeImage(request: RemoveImageRequest__Output, context: RequestContext): Promise<RemoveImageResponse> {
    const reference = requireImage(request.image?.image, 'RemoveImageRequest.image.image');
    await this.images.remove(reference, context.log);
    return {};
  }

  private async imageFsInfo(): Promise<ImageFsInfoResponse> {
    const usage = await this.images.filesystemUsage();
    return {
      image_filesystems: [
        {
          timestamp: usage.timestampNs.toString(),
          fs_id: { mountpoint: usage.mountpoint },
          used_bytes: { value: usage.usedBytes },
          inodes_used: { value: usage.inodesUsed },
        },
      ],
      container_filesystems: [],
    };
  }
}

function requireImage(value: string | undefined, field: string): string {
  if (value === undefined || value === '') throw new InvalidArgumentError(`${field} is required: give an image name, ID or digest reference`);
  return value;
}

function toRegistryAuth(auth: AuthConfig__Output): RegistryAuth {
  const result: RegistryAuth = {};
  if (auth.username) result.username = auth.username;
  if (auth.password) result.password = auth.password;
  if (auth.auth) result.auth = auth.auth;
  if (auth.server_address) result.serverAddress = auth.server_address;
  if (auth.identity_token) result.identityToken = auth.identity_token;
  if (auth.registry_token) result.registryToken = auth.registry_token;
  return result;
}

/**
 * Converts a record to the CRI Image. The config's User gives `uid` when its user part is numeric
 * and `username` otherwise; an empty User gives neither, which the kubelet reads as root.
 */
export function toCriImage(image: ImageRecord): Image {
  const result: Image = {
    id: image.id,
    repo_tags: image.repoTags,
    repo_digests: image.repoDigests,
    size: image.size,
    username: '',
    spec: { image: image.id, annotations: {} },
    pinned: image.pinned,
  };

  const user = (image.config.config?.User ?? '').split(':')[0] ?? '';
  if (/^\d+$/.test(user)) result.uid = { value: user };
  else if (user !== '') result.username = user;
  return result;
}
