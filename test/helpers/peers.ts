/**
 * The backends every frontend integration test runs against: qemu-storage-daemon (the
 * reference) and this project's embedded backend (in a child process), as vhost-user-blk; and
 * the embedded backend as vhost-user-scsi, because no installable peer exports virtio-scsi. All
 * export a raw file the tests read independently.
 */
import type { ChildProcess } from 'node:child_process';
import {
  openBlockDevice,
  openScsiDevice,
  type BlockDevice,
  type OpenOptions,
} from '../../src/index.js';
import { startQsd } from './qsd.js';
import { startEmbedded } from './embedded-backend.js';

export type PeerKind = 'qsd' | 'embedded' | 'embedded-scsi';
/** The virtio-blk peers. */
export const PEERS: readonly PeerKind[] = ['qsd', 'embedded'];
/** Every peer, virtio-scsi included: for the suites that hold for both device types. */
export const ALL_PEERS: readonly PeerKind[] = ['qsd', 'embedded', 'embedded-scsi'];

export interface PeerOptions {
  /** Bytes of the device (the raw file, or null-co / RAM when `driver` is 'null'). */
  size?: number;
  /** 'file' (default): a raw file the test can read; 'null': no data kept (fast). */
  driver?: 'file' | 'null';
  writable?: boolean;
  contents?: Buffer;
  queues?: number;
}

export interface Peer {
  kind: PeerKind;
  socketPath: string;
  /** The raw file behind the device ('' when driver is 'null'). */
  imagePath: string;
  process: ChildProcess;
  stop(): Promise<void>;
  kill(): void;
  /** Opens the device with the API for its type (openBlockDevice / openScsiDevice). */
  open(options?: OpenOptions): Promise<BlockDevice>;
}

export async function startPeer(kind: PeerKind, options: PeerOptions = {}): Promise<Peer> {
  const size = options.size ?? 16 * 1024 * 1024;
  if (kind === 'qsd') {
    const qsd = await startQsd({
      size,
      driver: options.driver ?? 'file',
      writable: options.writable ?? true,
      ...(options.contents ? { contents: options.contents } : {}),
      // Without discard=unmap the file driver ignores discards, and the tests check them.
      blockdevOptions: options.driver === 'null' ? [] : ['discard=unmap'],
      exportOptions: options.queues ? [`num-queues=${options.queues}`] : [],
    });
    return {
      kind,
      socketPath: qsd.socketPath,
      imagePath: options.driver === 'null' ? '' : qsd.imagePath,
      process: qsd.process,
      stop: () => qsd.stop(),
      kill: () => qsd.kill(),
      open: (o) => openBlockDevice(qsd.socketPath, o),
    };
  }
  const embedded = await startEmbedded({
    ...(options.driver === 'null' ? { size } : { fileSize: size }),
    readOnly: options.writable === false,
    ...(options.contents ? { contents: options.contents } : {}),
    ...(options.queues ? { queues: options.queues } : {}),
    ...(kind === 'embedded-scsi' ? { type: 'scsi' as const } : {}),
  });
  const open = kind === 'embedded-scsi' ? openScsiDevice : openBlockDevice;
  return {
    kind,
    socketPath: embedded.socketPath,
    imagePath: embedded.imagePath,
    process: embedded.process,
    stop: async () => {
      await embedded.stop();
    },
    kill: () => embedded.kill(),
    open: (o) => open(embedded.socketPath, o),
  };
}
