// Command-line options of the benchmark scripts, through util.parseArgs.
import { parseArgs } from 'node:util';

const kebab = (key) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * Each key of `defaults` is an option spelled in kebab case (qsdCpu: --qsd-cpu). A boolean
 * default makes a flag, a number default takes a number (anything else is an error), any other
 * default takes a string. Unknown options are errors. Returns the options with the defaults
 * filled in, the positional arguments, and which options were given.
 */
export function parseScriptOptions(argv, defaults) {
  const spec = {};
  for (const [key, value] of Object.entries(defaults)) {
    spec[kebab(key)] = { type: typeof value === 'boolean' ? 'boolean' : 'string' };
  }
  const { values, positionals } = parseArgs({
    args: argv,
    options: spec,
    allowPositionals: true,
    strict: true,
  });
  const options = { ...defaults };
  for (const [key, value] of Object.entries(defaults)) {
    const given = values[kebab(key)];
    if (given === undefined) continue;
    if (typeof value === 'number') {
      const n = Number(given);
      if (given.trim() === '' || !Number.isFinite(n)) {
        throw new Error(`--${kebab(key)} takes a number, got ${given}`);
      }
      options[key] = n;
    } else {
      options[key] = given;
    }
  }
  return { options, positionals, given: (key) => values[kebab(key)] !== undefined };
}

/** A configuration argument of the form NAME=MODE[:JSON] (JSON: completionOptions). */
export function parseConfig(text) {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`a configuration is NAME=MODE[:JSON], got ${text}`);
  const rest = text.slice(eq + 1);
  const colon = rest.indexOf(':');
  return {
    name: text.slice(0, eq),
    mode: colon >= 0 ? rest.slice(0, colon) : rest,
    options: colon >= 0 ? JSON.parse(rest.slice(colon + 1)) : undefined,
  };
}
