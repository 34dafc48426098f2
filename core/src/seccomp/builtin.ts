import path from 'node:path';
import type { ValidateFunction } from 'ajv/dist/2020.js';
import type { Logger } from '../log.js';
import { InvalidArgumentError, errorMessage } from '../errors.js';
import { createAjv, loadSchemaDir, validationIssues } from '../schema/validator.js';
import { SCHEMAS_DIR } from '../paths.js';
import { FileLimitError, readRegularFile } from '../util/fs.js';
import type { OciSeccomp } from '../runtime/oci-spec.js';
import type { SeccompContext, SeccompProfileProvider, SecurityProfileRequest } from './provider.js';
import { runtimeDefaultProfile } from './default-profile.js';

const LOCALHOST_REF_FIELD = 'security_context.seccomp.localhost_ref';
const PROFILE_SCHEMA_ID = 'https://berth.dev/schemas/seccomp-profile.schema.json';

/**
 * Largest accepted profile file, checked before it is read. A profile lists a few hundred
 * syscall names, an estimated tens of KiB, so 1 MiB leaves ample room.
 */
export const MAX_PROFILE_BYTES = 1024 * 1024;

/**
 * The core's seccomp provider, registered as "builtin": RuntimeDefault is berth's own profile
 * (or the file `seccomp.profile` names), Unconfined is no filter, and Localhost reads a JSON
 * profile from an absolute path and validates it against schemas/seccomp-profile.schema.json.
 */
export class BuiltinSeccompProvider implements SeccompProfileProvider {
  readonly name = 'builtin';

  private constructor(
    private readonly validate: ValidateFunction,
    private readonly runtimeDefault: OciSeccomp,
  ) {}

  /** Loads the schema and the RuntimeDefault profile; `profileFile` empty means the built-in one. */
  static async create(profileFile: string, log: Logger): Promise<BuiltinSeccompProvider> {
    const ajv = createAjv({ useDefaults: false });
    await loadSchemaDir(ajv, SCHEMAS_DIR);
    const validate = ajv.getSchema(PROFILE_SCHEMA_ID);
    if (!validate) throw new Error(`seccomp profile schema ${PROFILE_SCHEMA_ID} not found in ${SCHEMAS_DIR}`);

    let runtimeDefault = runtimeDefaultProfile();
    if (profileFile !== '') {
      runtimeDefault = await loadProfile(profileFile, validate, 'seccomp.profile');
      log.info({ profile: profileFile }, 'RuntimeDefault seccomp profile loaded from file');
    }
    return new BuiltinSeccompProvider(validate, runtimeDefault);
  }

  async resolve(profile: SecurityProfileRequest, context: SeccompContext): Promise<OciSeccomp | undefined> {
    switch (profile.profileType) {
      case 'Unconfined':
        return undefined;
      case 'RuntimeDefault':
        return structuredClone(this.runtimeDefault);
      case 'Localhost': {
        const ref = profile.localhostRef ?? '';
        if (!path.isAbsolute(ref)) {
          throw new InvalidArgumentError(`${LOCALHOST_REF_FIELD}: ${JSON.stringify(ref)} is not an absolute path to a profile file`);
        }
        const loaded = await loadProfile(ref, this.validate, LOCALHOST_REF_FIELD);
        context.log.debug({ profile: ref }, 'Localhost seccomp profile loaded');
        return loaded;
      }
      default:
        throw new InvalidArgumentError(
          `seccomp.profile_type: ${JSON.stringify(profile.profileType)} is not supported (supported: RuntimeDefault, Unconfined, Localhost)`,
        );
    }
  }
}

/** Reads and validates a profile file; every problem is InvalidArgument naming the file and field. */
async function loadProfile(file: string, validate: ValidateFunction, field: string): Promise<OciSeccomp> {
  // Symlinks are followed because profile directories are often mounted config maps, whose
  // files are symlinks. The regular-file check stops a FIFO or /dev/zero behind the link.
  let text: string;
  try {
    text = await readRegularFile(file, { maxBytes: MAX_PROFILE_BYTES });
  } catch (err) {
    if (err instanceof FileLimitError) throw new InvalidArgumentError(`${field}: seccomp profile ${err.message}`);
    throw new InvalidArgumentError(`${field}: cannot read seccomp profile ${file}: ${errorMessage(err)}`);
  }

  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`${field}: seccomp profile ${file} is not valid JSON: ${errorMessage(err)}`);
  }

  const issues = validationIssues(validate, data);
  if (issues.length > 0) {
    const details = issues.map((issue) => `${issue.pointer || '/'}: ${issue.message}`).join('; ');
    throw new InvalidArgumentError(`${field}: seccomp profile ${file} is invalid: ${details}`);
  }

  const profile = data as OciSeccomp & { syscalls?: (NonNullable<OciSeccomp['syscalls']>[number] & { name?: string })[] };
  for (const rule of profile.syscalls ?? []) {
    if (!rule.names && rule.name) rule.names = [rule.name];
    delete rule.name;
  }
  return profile;
}
