const WIDTH = 16;

/**
 * qemu-io style dump: `00001000:  ab ab ...  ................`, addresses are device offsets.
 * Runs of identical lines collapse to `*` as in hexdump(1) unless `all` is set.
 */
export function hexdump(data: Uint8Array, address: number, all = false): string {
  const out: string[] = [];
  let previous: string | undefined;
  let squeezed = false;
  for (let i = 0; i < data.length; i += WIDTH) {
    const row = data.subarray(i, Math.min(i + WIDTH, data.length));
    const hex: string[] = [];
    let text = '';
    for (let j = 0; j < WIDTH; j++) {
      if (j < row.length) {
        const byte = row[j]!;
        hex.push(byte.toString(16).padStart(2, '0'));
        text += byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : '.';
      } else {
        hex.push('  ');
      }
    }
    const body = `${hex.join(' ')}  ${text}`;
    const lastRow = i + WIDTH >= data.length;
    if (!all && body === previous && !lastRow) {
      if (!squeezed) out.push('*');
      squeezed = true;
      continue;
    }
    squeezed = false;
    previous = body;
    out.push(`${(address + i).toString(16).padStart(8, '0')}:  ${body}`);
  }
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}
