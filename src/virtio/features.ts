/** Device-independent virtio feature bits (virtio spec, "Reserved Feature Bits"). */
export const VirtioFeature = {
  VIRTIO_F_NOTIFY_ON_EMPTY: 24,
  VIRTIO_F_ANY_LAYOUT: 27,
  VIRTIO_RING_F_INDIRECT_DESC: 28,
  VIRTIO_RING_F_EVENT_IDX: 29,
  VIRTIO_F_VERSION_1: 32,
  VIRTIO_F_ACCESS_PLATFORM: 33,
  VIRTIO_F_RING_PACKED: 34,
  VIRTIO_F_IN_ORDER: 35,
} as const;

/** vhost-specific bits that share the feature word (vhost-user spec). */
export const VhostFeature = {
  VHOST_F_LOG_ALL: 26,
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
} as const;

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export function hasBit(mask: bigint, n: number): boolean {
  return (mask & bit(n)) !== 0n;
}

/** Names of the bits set in `mask`, using `table` (name -> bit); unknown bits as 'bit<N>'. */
export function featureNames(
  mask: bigint,
  ...tables: Readonly<Record<string, number>>[]
): string[] {
  const names: string[] = [];
  for (let n = 0; n < 64; n++) {
    if (!hasBit(mask, n)) continue;
    let name: string | undefined;
    for (const table of tables) {
      for (const [key, value] of Object.entries(table)) if (value === n) name = key;
    }
    names.push(name ?? `bit${n}`);
  }
  return names;
}
