import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { CORE_DIR } from '../paths.js';
import type { ProtoGrpcType } from './generated/api.js';

export const CRI_PROTO_FILE = path.join(CORE_DIR, 'proto/api.proto');

/** Options shared with the type generator (scripts/gen-proto-types.js); int64 values are strings. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: ProtoGrpcType | undefined;

/** Loads the CRI v1 package (`runtime.v1`) once per process. */
export async function loadCriProto(): Promise<ProtoGrpcType> {
  if (!cached) {
    const definition = await protoLoader.load(CRI_PROTO_FILE, PROTO_LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}
