import { type ConfigFileChoice, chooseConfigFile, envLayer, fileLayer, layerOf, mergeLayers } from './config-layers.js';
import type { AgentbusConfig } from './config-types.js';
import { validateConfig } from './validate-config.js';

/** Flags of `agentbus serve` that set configuration; absent ones leave the field to the layers below. */
export interface ConfigFlags {
  /** `--config <file>`. */
  readonly config?: string;
  /** `--transport <url>` when given on the command line (not its env or default value). */
  readonly transport?: string;
  readonly host?: string;
  /** As typed; validated like every other source. */
  readonly port?: string;
  readonly logLevel?: string;
}

/** Where {@link loadConfig} looks. */
export interface LoadConfigInput {
  readonly flags?: ConfigFlags;
  /** Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** Where relative paths (and `./agentbus.yaml`) are resolved; default `process.cwd()`. */
  readonly cwd?: string;
}

/** The validated configuration and the file it was read from, if any. */
export interface LoadedConfig {
  readonly config: AgentbusConfig;
  readonly file: ConfigFileChoice | undefined;
}

const FLAG_NAMES = Object.freeze({
  transport: '--transport',
  host: '--host',
  port: '--port',
  logLevel: '--log-level',
});

/**
 * The configuration of `agentbus serve`: defaults, then the YAML file (`--config`, else
 * `$AGENTBUS_CONFIG`, else `./agentbus.yaml` when present), then the `AGENTBUS_*` environment,
 * then the flags; later sources win field by field. Throws a ConfigError naming the field and
 * the source of the bad value.
 */
export function loadConfig(input: LoadConfigInput = {}): LoadedConfig {
  const env = input.env ?? process.env;
  const cwd = input.cwd ?? process.cwd();
  const flags = input.flags ?? {};
  const file = chooseConfigFile(flags.config, env, cwd);
  const label = file ? (flags.config ?? (file.from === 'default' ? 'agentbus.yaml' : file.path)) : '';
  const flagEntries = (Object.keys(FLAG_NAMES) as (keyof typeof FLAG_NAMES)[]).flatMap((key) => {
    const text = flags[key];
    if (text === undefined) return [];
    const value = key === 'port' && /^\s*-?\d+\s*$/.test(text) ? Number(text) : text;
    return [{ path: key, value, origin: FLAG_NAMES[key] }];
  });
  const merged = mergeLayers([...(file ? [fileLayer(file.path, label)] : []), envLayer(env), layerOf(flagEntries)]);
  return { config: validateConfig(merged), file };
}
