import * as grpc from '@grpc/grpc-js';
import { loadCriProto } from '../../src/cri/proto.js';
import type { RuntimeServiceClient } from '../../src/cri/generated/runtime/v1/RuntimeService.js';
import type { ImageServiceClient } from '../../src/cri/generated/runtime/v1/ImageService.js';

type UnaryMethods<Client> = {
  [K in keyof Client as K extends `${infer First}${string}` ? (First extends Uppercase<First> ? K : never) : never]: Client[K];
};

/** Promise form of a generated client's unary methods: `await client.runtime.Version({})`. */
export type Promised<Client> = {
  [K in keyof UnaryMethods<Client>]: UnaryMethods<Client>[K] extends {
    (argument: infer Request, callback: grpc.requestCallback<infer Response>): grpc.ClientUnaryCall;
  }
    ? (request: Request, options?: { deadlineMs?: number }) => Promise<Response>
    : never;
};

export interface CriClient {
  runtime: Promised<RuntimeServiceClient>;
  image: Promised<ImageServiceClient>;
  rawRuntime: RuntimeServiceClient;
  rawImage: ImageServiceClient;
  close(): void;
}

/** Connects a CRI client to a daemon's unix socket, as the kubelet or crictl would. */
export async function connectCri(socketPath: string): Promise<CriClient> {
  const proto = await loadCriProto();
  const address = `unix://${socketPath}`;
  const credentials = grpc.credentials.createInsecure();
  const options = { 'grpc.max_receive_message_length': 16 * 1024 * 1024 };
  const rawRuntime = new proto.runtime.v1.RuntimeService(address, credentials, options);
  const rawImage = new proto.runtime.v1.ImageService(address, credentials, options);
  return {
    runtime: promisify(rawRuntime),
    image: promisify(rawImage),
    rawRuntime,
    rawImage,
    close: () => {
      rawRuntime.close();
      rawImage.close();
    },
  };
}

function promisify<Client extends grpc.Client>(client: Client): Promised<Client> {
  return new Proxy({} as Promised<Client>, {
    get(_target, name: string) {
      const method = (client as unknown as Record<string, unknown>)[name];
      if (typeof method !== 'function') throw new Error(`CRI client has no method ${name}`);
      return (request: unknown, options?: { deadlineMs?: number }) =>
        new Promise((resolve, reject) => {
          const deadline = new Date(Date.now() + (options?.deadlineMs ?? 120_000));
          (method as (...args: unknown[]) => unknown).call(client, request, { deadline }, (err: grpc.ServiceError | null, response: unknown) =>
            err ? reject(err) : resolve(response),
          );
        });
    },
  });
}

/** Runs `call` and returns the gRPC error it fails with; fails the test when it succeeds. */
export async function expectGrpcError(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail with a gRPC error, but it succeeded');
}

export { grpc };
