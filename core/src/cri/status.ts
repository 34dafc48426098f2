import { status as GrpcStatus, type ServiceError, Metadata } from '@grpc/grpc-js';
import { BerthError, type ErrorKind, errorMessage } from '../errors.js';

const CODES: Record<ErrorKind, GrpcStatus> = {
  InvalidArgument: GrpcStatus.INVALID_ARGUMENT,
  NotFound: GrpcStatus.NOT_FOUND,
  AlreadyExists: GrpcStatus.ALREADY_EXISTS,
  FailedPrecondition: GrpcStatus.FAILED_PRECONDITION,
  Unimplemented: GrpcStatus.UNIMPLEMENTED,
  Unavailable: GrpcStatus.UNAVAILABLE,
  DeadlineExceeded: GrpcStatus.DEADLINE_EXCEEDED,
  ResourceExhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  PermissionDenied: GrpcStatus.PERMISSION_DENIED,
  Internal: GrpcStatus.INTERNAL,
};

/** Maps a thrown value to the gRPC status sent to the client; untyped errors become INTERNAL. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const code = err instanceof BerthError ? CODES[err.kind] : GrpcStatus.INTERNAL;
  return { code, details: errorMessage(err), metadata: new Metadata() };
}
