import type { Logger } from '@berth/core';
import { CniPluginError, PluginNotFoundError } from './errors.js';
import type { PluginInvoker } from './plugin-exec.js';
import { asResult } from './result.js';
import type { CapabilityArgs } from './runtime-config.js';
import { supportsCheck, type CniCommand, type CniResult, type NetworkConfList, type PluginConf } from './spec.js';

/** Values shared by every plugin invocation for one attachment. */
export interface ChainContext {
  network: NetworkConfList;
  containerId: string;
  /** Namespace path; empty for a DEL whose namespace is gone. */
  netns: string;
  ifName: string;
  cniArgs: string;
  capabilityArgs: CapabilityArgs;
  log: Logger;
}

export interface PluginTiming {
  plugin: string;
  durationMs: number;
}

/**
 * Builds the stdin document of one plugin: its own config with the list's name and cniVersion,
 * the runtimeConfig of the capabilities it declares, and the previous result when given.
 */
export function pluginConfig(
  network: NetworkConfList,
  plugin: PluginConf,
  capabilityArgs: CapabilityArgs,
  prevResult: CniResult | undefined,
): Record<string, unknown> {
  const config: Record<string, unknown> = structuredClone(plugin);
  config.name = network.name;
  config.cniVersion = network.cniVersion;

  const runtimeConfig: Record<string, unknown> = {};
  for (const [capability, enabled] of Object.entries(plugin.capabilities ?? {})) {
    const value = capabilityArgs[capability as keyof CapabilityArgs];
    if (enabled === true && value !== undefined) runtimeConfig[capability] = value;
  }
  if (Object.keys(runtimeConfig).length > 0) {
    const existing = typeof config.runtimeConfig === 'object' && config.runtimeConfig !== null ? config.runtimeConfig : {};
    config.runtimeConfig = { ...existing, ...runtimeConfig };
  }

  if (prevResult !== undefined) config.prevResult = prevResult;
  else delete config.prevResult;
  return config;
}

/** Capabilities for which the pod has values but no plugin of the list declares them. */
export function unusedCapabilities(network: NetworkConfList, capabilityArgs: CapabilityArgs): string[] {
  const declared = new Set(
    network.plugins.flatMap((plugin) => Object.entries(plugin.capabilities ?? {}).filter(([, on]) => on === true).map(([name]) => name)),
  );
  return Object.keys(capabilityArgs).filter((name) => !declared.has(name));
}

/**
 * Runs ADD on each plugin in list order, passing each result to the next plugin as prevResult.
 * Returns the last plugin's result. On failure, throws without undoing anything: the caller
 * runs DEL, which every plugin must accept for a partial ADD.
 */
export async function addChain(invoker: PluginInvoker, context: ChainContext): Promise<{ result: CniResult; timings: PluginTiming[] }> {
  let result: CniResult | undefined;
  const timings: PluginTiming[] = [];

  for (const plugin of context.network.plugins) {
    const { output, durationMs } = await invoke(invoker, 'ADD', context, plugin, result);
    timings.push({ plugin: plugin.type, durationMs });

    const checked = asResult(output);
    if (typeof checked === 'string') {
      const site = { command: 'ADD' as const, plugin: plugin.type, network: context.network.name, containerId: context.containerId };
      throw new CniPluginError(site, { exitCode: 0, stderr: '', output: `returned an invalid result: ${checked}` });
    }
    result = checked;
  }

  // The list has at least one plugin, so the loop set a result or threw.
  return { result: result!, timings };
}

/**
 * Runs DEL on each plugin in reverse list order. From spec 0.4.0 on, each gets the cached result
 * of ADD as prevResult. Every plugin runs even when one fails, so that each releases what it
 * can; each failure is logged and the first is then thrown.
 *
 * A plugin whose binary is not installed is skipped with an error log instead of failing the
 * DEL: otherwise a pod whose ADD failed on that missing binary could never be removed. If the
 * binary was removed after a successful ADD, what that plugin made stays behind.
 */
export async function delChain(invoker: PluginInvoker, context: ChainContext, cachedResult: CniResult | undefined): Promise<void> {
  const prevResult = supportsCheck(context.network.cniVersion) ? cachedResult : undefined;
  const failures: unknown[] = [];

  for (const plugin of [...context.network.plugins].reverse()) {
    try {
      await invoke(invoker, 'DEL', context, plugin, prevResult);
    } catch (err) {
      if (err instanceof PluginNotFoundError) {
        context.log.error({ err, plugin: plugin.type, network: context.network.name }, 'CNI DEL skipped a plugin that is not installed; anything it made stays behind');
        continue;
      }
      failures.push(err);
      context.log.error({ err, plugin: plugin.type, network: context.network.name }, 'CNI DEL failed; running DEL of the remaining plugins');
    }
  }

  if (failures.length > 0) throw failures[0];
}

/**
 * Runs CHECK on each plugin in list order with the cached ADD result. Returns false without
 * running anything when the list's version has no CHECK or the list sets disableCheck.
 */
export async function checkChain(invoker: PluginInvoker, context: ChainContext, cachedResult: CniResult): Promise<boolean> {
  if (!supportsCheck(context.network.cniVersion) || context.network.disableCheck === true) return false;

  for (const plugin of context.network.plugins) {
    await invoke(invoker, 'CHECK', context, plugin, cachedResult);
  }
  return true;
}

async function invoke(
  invoker: PluginInvoker,
  command: CniCommand,
  context: ChainContext,
  plugin: PluginConf,
  prevResult: CniResult | undefined,
): Promise<{ output: unknown; durationMs: number }> {
  context.log.debug({ cni_command: command, plugin: plugin.type, network: context.network.name, netns: context.netns }, 'CNI plugin starting');
  return invoker.invoke({
    command,
    plugin: plugin.type,
    network: context.network.name,
    config: pluginConfig(context.network, plugin, context.capabilityArgs, prevResult),
    containerId: context.containerId,
    netns: context.netns,
    ifName: context.ifName,
    args: context.cniArgs,
    log: context.log,
  });
}
