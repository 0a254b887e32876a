import { parseArgs } from 'node:util';
import { UsageError } from './errors.js';

/** One option of a command: the parseArgs shape plus what --help says about it. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in --help, e.g. 'BYTES'. */
  arg?: string;
  help: string;
}

export interface CommandSpec {
  name: string;
  /** Positional part of the synopsis, e.g. '<socket> [--json]'. */
  usage: string;
  summary: string;
  /** Extra paragraphs for --help (examples, notes). */
  details?: string;
  options: Record<string, OptionSpec>;
  /** The command takes --json (data output). */
  json?: boolean;
  /** The command opens a device (adds --trace and device options). */
  device?: boolean;
}

export type OptionValues = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface ParsedArgs {
  values: OptionValues;
  positionals: string[];
}

const COMMON: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', help: 'show this help and exit' },
  debug: { type: 'boolean', help: 'print stack traces with errors' },
};
const JSON_OPTION: Record<string, OptionSpec> = {
  json: { type: 'boolean', help: 'print the result as JSON on stdout' },
};
const DEVICE: Record<string, OptionSpec> = {
  trace: {
    type: 'boolean',
    help: 'log every vhost-user message on stderr (also DEBUG=vhost-user)',
  },
  'queue-size': { type: 'string', arg: 'N', help: 'descriptors per virtqueue (default 256)' },
  hugepages: {
    type: 'string',
    arg: '2M|1G',
    help: 'share hugepage memory instead of memfd (reserved first; SPDK needs it)',
  },
  timeout: { type: 'string', arg: 'MS', help: 'handshake step timeout in ms (default 5000)' },
  type: { type: 'string', arg: 'blk|scsi', help: 'device type behind the socket (default blk)' },
  target: { type: 'string', arg: 'N', help: 'scsi: target to open (default: first disk found)' },
  lun: { type: 'string', arg: 'N', help: 'scsi: LUN to open (default: first disk found)' },
};

export function allOptions(spec: CommandSpec): Record<string, OptionSpec> {
  return {
    ...spec.options,
    ...(spec.json ? JSON_OPTION : {}),
    ...(spec.device ? DEVICE : {}),
    ...COMMON,
  };
}

/** util.parseArgs with strict checking; its errors become UsageError (exit 2). */
export function parseCommand(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options: Record<
    string,
    { type: 'string' | 'boolean'; short?: string; multiple?: boolean }
  > = {};
  for (const [name, option] of Object.entries(allOptions(spec))) {
    options[name] = {
      type: option.type,
      ...(option.short ? { short: option.short } : {}),
      ...(option.multiple ? { multiple: true } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as OptionValues, positionals };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new UsageError(
      // parseArgs appends advice about '--' to its first sentence; the first sentence is enough.
      `${spec.name}: ${message.split(/\.\s|\n/)[0]} (see 'vhost-user ${spec.name} --help')`,
    );
  }
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

export function helpText(spec: CommandSpec): string {
  const lines = [`usage: vhost-user ${spec.name} ${spec.usage}`, '', ...wrap(spec.summary, 80), ''];
  if (spec.details) lines.push(spec.details.trimEnd(), '');
  lines.push('options:');
  const entries = Object.entries(allOptions(spec)).map(([name, option]) => {
    const flag = `${option.short ? `-${option.short}, ` : '    '}--${name}${option.arg ? ` ${option.arg}` : ''}`;
    return [flag, option.help] as const;
  });
  const width = Math.max(...entries.map(([flag]) => flag.length));
  for (const [flag, help] of entries) lines.push(`  ${flag.padEnd(width)}  ${help}`);
  return `${lines.join('\n')}\n`;
}

export function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function flag(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

/** Exactly `count` positionals (after the optional ones are filled in by the caller). */
export function expectPositionals(
  spec: CommandSpec,
  positionals: string[],
  min: number,
  max = min,
): void {
  if (positionals.length < min) {
    throw new UsageError(
      `${spec.name}: missing argument (usage: vhost-user ${spec.name} ${spec.usage})`,
    );
  }
  if (positionals.length > max) {
    throw new UsageError(`${spec.name}: unexpected argument '${positionals[max]}'`);
  }
}
