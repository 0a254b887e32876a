/** JSON for data output: bigints (feature masks) as 0x hex strings, Infinity as null. */
export function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (typeof v === 'bigint') return `0x${v.toString(16)}`;
      if (typeof v === 'number' && !Number.isFinite(v)) return null;
      return v;
    },
    2,
  );
}

export function printJson(value: unknown): void {
  process.stdout.write(`${toJson(value)}\n`);
}

/** Aligned "key   value" lines. */
export function printFields(fields: [string, string | number][], indent = ''): void {
  const width = Math.max(0, ...fields.map(([key]) => key.length));
  for (const [key, value] of fields) {
    process.stdout.write(`${indent}${key.padEnd(width)}  ${value}\n`);
  }
}

/** Wraps a list of names to the terminal width (80 when not a TTY). */
export function wrapList(names: string[], indent: number): string {
  if (names.length === 0) return '(none)';
  const width = Math.max(40, (process.stdout.columns ?? 80) - indent);
  const lines: string[] = [];
  let line = '';
  for (const name of names) {
    if (line.length > 0 && line.length + 1 + name.length > width) {
      lines.push(line);
      line = name;
    } else {
      line = line.length > 0 ? `${line} ${name}` : name;
    }
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}
