import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import * as addFormatsModule from 'ajv-formats';
import { closest } from 'fastest-levenshtein';

// ajv-formats is CommonJS with a default export; under NodeNext the default sits one level down.
const addFormats = addFormatsModule.default as unknown as (ajv: Ajv2020) => Ajv2020;

/** One schema violation, located by JSON pointer and by dotted key path. */
export interface SchemaIssue {
  /** JSON pointer of the offending value, e.g. `/runtime/shm_size`; empty for the document root. */
  pointer: string;
  /** The same location as a dotted key path, e.g. `runtime.shm_size`. */
  keyPath: string;
  message: string;
}

/** Creates an Ajv instance that reports all errors; `useDefaults` fills in schema defaults. */
export function createAjv(options: { useDefaults: boolean }): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, verbose: true, useDefaults: options.useDefaults, strict: false });
  addFormats(ajv);
  return ajv;
}

/**
 * Loads every `*.schema.json` in `dir` into `ajv`, addressable by file name and by `$id`, so that
 * `$ref: "runtime-handler.schema.json"` resolves between them.
 */
export async function loadSchemaDir(ajv: Ajv2020, dir: string): Promise<void> {
  const names = (await readdir(dir)).filter((name) => name.endsWith('.schema.json')).sort();
  for (const name of names) {
    const schema = JSON.parse(await readFile(path.join(dir, name), 'utf8')) as Record<string, unknown>;
    if (ajv.getSchema(String(schema.$id ?? name))) continue;
    ajv.addSchema(schema);
  }
}

/** Runs `validate` on `data` and returns its errors as located, readable issues (empty when valid). */
export function validationIssues(validate: ValidateFunction, data: unknown): SchemaIssue[] {
  if (validate(data)) return [];
  return (validate.errors ?? []).map((error) => describeError(error));
}

/** Converts a JSON pointer to a dotted key path; keys that are not bare words are quoted. */
export function pointerToKeyPath(pointer: string): string {
  if (pointer === '') return '(root)';
  return pointer
    .slice(1)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((key) => (/^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key)))
    .join('.');
}

function describeError(error: ErrorObject): SchemaIssue {
  let pointer = error.instancePath;
  let message: string;

  switch (error.keyword) {
    case 'additionalProperties': {
      const key = String(error.params.additionalProperty);
      pointer = `${pointer}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      const known = knownKeys(error.parentSchema);
      const suggestion = known.length > 0 ? closest(key, known) : undefined;
      message = suggestion
        ? `unknown key "${key}"; did you mean "${suggestion}"?`
        : `unknown key "${key}"; this table takes no other keys`;
      break;
    }
    case 'required':
      pointer = `${pointer}/${String(error.params.missingProperty)}`;
      message = 'required key is missing';
      break;
    case 'type':
      message = `must be of type ${String(error.params.type)}`;
      break;
    case 'enum':
      message = `must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
      break;
    case 'propertyNames':
      pointer = `${pointer}/${String(error.params.propertyName)}`;
      message = 'invalid key name';
      break;
    default:
      message = error.message ?? `fails schema keyword "${error.keyword}"`;
  }

  return { pointer, keyPath: pointerToKeyPath(pointer), message };
}

function knownKeys(schema: unknown): string[] {
  if (typeof schema !== 'object' || schema === null) return [];
  const properties = (schema as { properties?: Record<string, unknown> }).properties;
  return properties ? Object.keys(properties) : [];
}
