import { BerthError, FailedPreconditionError, type ErrorKind } from '@berth/core';
import { CNI_ERROR_CODES, type CniCommand, type CniErrorDocument } from './spec.js';

/** Location of a plugin invocation (command, plugin, network, sandbox), for error messages and logs. */
export interface InvocationSite {
  command: CniCommand;
  plugin: string;
  network: string;
  containerId?: string;
}

export function describeSite(site: InvocationSite): string {
  const target = site.containerId ? `, sandbox ${site.containerId}` : '';
  return `CNI plugin "${site.plugin}" (network "${site.network}", ${site.command}${target})`;
}

/**
 * A plugin that exited with an error. The message carries the plugin's own `msg`, `details` and
 * `code`, so that the CRI caller sees what the plugin reported.
 */
export class CniPluginError extends BerthError {
  readonly site: InvocationSite;
  /** The CNI error code the plugin printed; undefined when its output held no error document. */
  readonly cniCode?: number;
  readonly exitCode?: number;
  readonly stderr: string;

  constructor(site: InvocationSite, failure: { document?: CniErrorDocument; exitCode?: number; stderr: string; output?: string }) {
    super(errorKindFor(failure.document?.code), formatMessage(site, failure));
    this.name = 'CniPluginError';
    this.site = site;
    this.cniCode = failure.document?.code;
    this.exitCode = failure.exitCode;
    this.stderr = failure.stderr;
  }
}

/** Code 11 means "try again later", so it maps to Unavailable. Every other failure is Internal. */
function errorKindFor(code: number | undefined): ErrorKind {
  return code === 11 ? 'Unavailable' : 'Internal';
}

function formatMessage(
  site: InvocationSite,
  failure: { document?: CniErrorDocument; exitCode?: number; stderr: string; output?: string },
): string {
  const document = failure.document;
  if (document) {
    const meaning = CNI_ERROR_CODES[document.code] ?? (document.code >= 100 ? 'plugin-specific error' : 'unknown error code');
    const details = document.details ? `: ${document.details}` : '';
    return `${describeSite(site)} failed: ${document.msg}${details} (CNI error code ${document.code}, ${meaning})`;
  }

  const text = [failure.output, failure.stderr].map((part) => part?.trim()).filter(Boolean).join('; ');
  const exit = failure.exitCode === undefined ? '' : ` with exit code ${failure.exitCode}`;
  return `${describeSite(site)} failed${exit}: ${text || 'no output'}`;
}

/** A plugin binary that none of the bin directories holds. */
export class PluginNotFoundError extends FailedPreconditionError {
  constructor(
    readonly site: InvocationSite,
    readonly binDirs: string[],
  ) {
    super(
      `${describeSite(site)}: binary "${site.plugin}" not found in ${binDirs.join(', ')}; install it or add its directory to plugins.cni.bin_dirs`,
    );
    this.name = 'PluginNotFoundError';
  }
}
