#!/usr/bin/env node
import 'reflect-metadata';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { ConfigSchema, loadConfig, readConfigFile, finishConfig, type ConfigOverrides } from './config/load.js';
import { printConfigMarkdown, printConfigToml } from './config/print.js';
import { createLogger, LOG_LEVELS, type LogLevel } from './log.js';
import { Daemon } from './daemon.js';
import { BERTH_VERSION } from './version.js';
import { errorMessage, StartupError } from './errors.js';
import { loadAndCheckPlugins } from './di/container.js';
import { closest } from 'fastest-levenshtein';

const USAGE = `Usage: berth [flags]                 run the daemon (default)
       berth config [flags]          print the effective configuration as commented TOML
       berth config --validate FILE  check one config file without starting
       berth config --markdown       print the configuration reference
       berth version                 print the version

Flags (each overrides the key of the same meaning in the config files):
  --config FILE        main config file, TOML or JSON (default /etc/berth/berth.toml)
  --config-dir DIR     drop-in directory merged in lexical order (default /etc/berth/berth.d)
  --listen PATH        CRI socket path (key: listen)
  --root DIR           persistent state directory (key: root)
  --runroot DIR        volatile state directory (key: runroot)
  --log-level LEVEL    one of ${LOG_LEVELS.join(', ')} (key: log_level)
  --default-runtime H  runtime handler for pods that name none (key: default_runtime)
  --plugin-dir DIR     extra plugin directory; repeat for more (key: plugin_dirs)
  -h, --help           show this help
`;

const OPTIONS = {
  config: { type: 'string' },
  'config-dir': { type: 'string' },
  listen: { type: 'string' },
  root: { type: 'string' },
  runroot: { type: 'string' },
  'log-level': { type: 'string' },
  'default-runtime': { type: 'string' },
  'plugin-dir': { type: 'string', multiple: true },
  validate: { type: 'string' },
  markdown: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

/** Parses the command line; a bad flag becomes a UsageError naming it (and the nearest known flag). */
function parseCommandLine(argv: string[]) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const flag = /'([^']+)'/.exec((err as Error).message)?.[1] ?? '';
      const known = Object.keys(OPTIONS).map((name) => `--${name}`);
      throw new UsageError(`unknown flag ${flag}; did you mean ${closest(flag, known)}?`);
    }
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const flag = /'(--?[\w-]+)/.exec((err as Error).message)?.[1] ?? 'a flag';
      throw new UsageError(`flag ${flag} needs a value`);
    }
    throw err;
  }
}

/** A command line that cannot be parsed; printed with the usage text, exit code 2. */
class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv);

  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }

  const command = positionals[0] ?? 'daemon';
  if (values.version || command === 'version') {
    process.stdout.write(`berth ${BERTH_VERSION}\n`);
    return 0;
  }

  const overrides: ConfigOverrides = {
    listen: values.listen,
    root: values.root,
    runroot: values.runroot,
    log_level: values['log-level'],
    default_runtime: values['default-runtime'],
    plugin_dirs: values['plugin-dir']?.map((dir) => path.resolve(dir)),
  };
  const schema = await ConfigSchema.load();

  if (command === 'config') {
    if (values.markdown) {
      process.stdout.write(printConfigMarkdown(schema.schema));
      return 0;
    }
    if (values.validate !== undefined) {
      const data = await readConfigFile(values.validate, schema);
      const config = finishConfig(data, schema, values.validate);
      // The plugins decide whether handler drivers, providers and their options are valid.
      await loadAndCheckPlugins(config, createLogger('silent'));
      process.stdout.write(`${values.validate}: valid\n`);
      return 0;
    }
    const { config } = await loadConfig({ file: values.config, dir: values['config-dir'], overrides }, schema);
    process.stdout.write(printConfigToml(config, schema.schema));
    return 0;
  }

  if (command !== 'daemon') {
    process.stderr.write(`berth: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }

  const { config, files } = await loadConfig({ file: values.config, dir: values['config-dir'], overrides }, schema);
  const log = createLogger(config.log_level as LogLevel);
  log.info({ version: BERTH_VERSION, config_files: files, pid: process.pid }, 'berth starting');

  const daemon = await Daemon.start(config, log);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      // A repeated signal must not kill the process half way through a graceful stop.
      if (stopping) {
        log.warn({ signal }, 'already shutting down; waiting for in-flight calls');
        return;
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await daemon.stop();
  log.flush();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`berth: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    const known = err instanceof StartupError;
    process.stderr.write(`berth: ${known ? errorMessage(err) : (err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
