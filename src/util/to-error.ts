/** What was thrown, as an Error (a thrown non-Error is wrapped, its text kept). */
export function toError(thrown: unknown): Error {
  return thrown instanceof Error ? thrown : new Error(String(thrown));
}
