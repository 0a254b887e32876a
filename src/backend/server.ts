/**
 * The listening side: accepts one frontend at a time on a Unix socket and hands it to a Session.
 * Owns the storage and the device (virtio-blk, or virtio-scsi with one LUN), which outlive
 * connections.
 */

import { EventEmitter } from 'node:events';
import { fstatSync, lstatSync, unlinkSync } from 'node:fs';
import { native, UV_READABLE, type PollHandle } from '../native.js';
import {
  DeviceClosedError,
  InvalidArgumentError,
  SystemError,
  type ProtocolError,
} from '../errors.js';
import { VIRTIO_BLK_SECTOR_SIZE } from '../devices/blk/spec.js';
import { configSpace, offeredFeatures, type BlkGeometry } from './blk-config.js';
import { BlkDevice } from './blk-device.js';
import type { DeviceModel } from './device-model.js';
import { offeredScsiFeatures, scsiConfigSpace, scsiRingCount } from './scsi-config.js';
import { ScsiDevice, type ScsiEvent } from './scsi-device.js';
import { ScsiTarget } from './scsi-target.js';
import { VIRTIO_SCSI_MAX_LUN, VIRTIO_SCSI_MAX_TARGET } from '../devices/scsi/spec.js';
import { resolveOptions, type BlockServerOptions, type ResolvedOptions } from './options.js';
import { Session } from './session.js';
import { newServerStats, type ServerStats } from './stats.js';
import { FileStorage, RamStorage, type Storage } from './storage.js';

const BACKLOG = 16;

export interface BlockServer extends EventEmitter {
  /** Opens the storage and starts accepting. @throws SystemError, fs errors */
  listen(): Promise<void>;
  /** Stops accepting, drops the frontend, unmaps, closes every fd and the file. Idempotent. */
  close(): Promise<void>;
  readonly socketPath: string | undefined;
  /** A snapshot of the counters. */
  readonly stats: ServerStats;
  /** How the disk is stored: 'ram', 'direct' (O_DIRECT) or 'buffered'; undefined before listen. */
  readonly storageKind: Storage['kind'] | undefined;
  /**
   * scsi: puts a virtio_scsi_event into the next eventq buffer the connected frontend posted.
   * Returns false if there is no frontend or no buffer. Without a buffer the event is missed: the
   * next event delivered on that connection carries VIRTIO_SCSI_T_EVENTS_MISSED, and so does the
   * empty event a later eventq kick gets (a new connection starts afresh: its driver scans anyway).
   * @throws InvalidArgumentError for a blk server or fields out of range
   */
  raiseEvent(event: ScsiEvent): boolean;
}

class BlockServerImpl extends EventEmitter implements BlockServer {
  readonly #options: ResolvedOptions;
  readonly #stats = newServerStats();
  #storage: Storage | undefined;
  #device: DeviceModel | undefined;
  #ringCount = 0;
  #features = 0n;
  #config: Uint8Array = new Uint8Array(0);
  #listenFd: number | undefined;
  #poll: PollHandle | undefined;
  #createdPath = false;
  #session: Session | undefined;
  #closed = false;

  constructor(options: ResolvedOptions) {
    super();
    this.#options = options;
  }

  get socketPath(): string | undefined {
    return this.#options.socketPath;
  }

  get stats(): ServerStats {
    return { ...this.#stats };
  }

  get storageKind(): Storage['kind'] | undefined {
    return this.#storage?.kind;
  }

  async listen(): Promise<void> {
    if (this.#closed) throw new DeviceClosedError('BlockServer is closed');
    if (this.#poll !== undefined) return;
    const opts = this.#options;
    const storage =
      opts.file !== undefined
        ? FileStorage.open(opts.file, opts.readOnly, opts.direct)
        : new RamStorage(opts.size!);
    try {
      const capacity = Math.floor(storage.size / opts.blockSize) * opts.blockSize;
      if (capacity < VIRTIO_BLK_SECTOR_SIZE) {
        throw new InvalidArgumentError(
          `${opts.file ?? 'disk'} is smaller than one ${opts.blockSize}-byte block`,
        );
      }
      this.#createDevice(storage, capacity);
      let listenFd: number;
      if (opts.socketPath !== undefined) {
        removeStaleSocket(opts.socketPath);
        try {
          listenFd = native.unixListen(opts.socketPath, BACKLOG);
        } catch (err) {
          throw new SystemError(`cannot listen on ${opts.socketPath}`, err);
        }
        this.#listenFd = listenFd;
        this.#createdPath = true;
      } else {
        listenFd = opts.listenFd!;
        checkListenFd(listenFd);
      }
      try {
        this.#poll = native.pollStart(listenFd, UV_READABLE, () => this.#accept());
      } catch (err) {
        throw new SystemError(`cannot watch the listening socket (fd ${listenFd})`, err);
      }
      // An inherited fd is ours to close only once listen() succeeded.
      this.#listenFd = listenFd;
    } catch (err) {
      this.#releaseListener();
      storage.close();
      throw err;
    }
    this.#storage = storage;
  }

  #createDevice(storage: Storage, capacity: number): void {
    const opts = this.#options;
    if (opts.type === 'scsi') {
      const geometry = { queues: opts.queues, segMax: opts.segMax, maxSectors: opts.maxSectors };
      const target = new ScsiTarget({
        storage,
        capacity,
        blockSize: opts.blockSize,
        readOnly: opts.readOnly,
        hideWriteProtect: opts.faults.hideWriteProtect === true,
        serial: opts.serial,
        lun: opts.lun,
        maxTransferBytes: opts.maxSectors * 512,
      });
      this.#device = new ScsiDevice(target, opts.target, {
        rejectAbortTask: opts.faults.rejectAbortTask === true,
        rejectLunReset: opts.faults.rejectLunReset === true,
        ignoreTaskManagement: opts.faults.ignoreTaskManagement === true,
        stats: this.#stats,
      });
      this.#ringCount = scsiRingCount(geometry);
      this.#features = offeredScsiFeatures();
      this.#config = scsiConfigSpace(geometry);
      return;
    }
    const geometry: BlkGeometry = {
      capacity,
      blockSize: opts.blockSize,
      readOnly: opts.readOnly,
      queues: opts.queues,
      sizeMax: opts.sizeMax,
      segMax: opts.segMax,
    };
    this.#device = new BlkDevice(storage, capacity, opts.readOnly, opts.serial);
    this.#ringCount = opts.queues;
    this.#features = offeredFeatures(geometry);
    this.#config = configSpace(geometry);
  }

  raiseEvent(event: ScsiEvent): boolean {
    if (this.#options.type !== 'scsi') {
      throw new InvalidArgumentError("raiseEvent needs a server of type 'scsi'");
    }
    checkEvent(event);
    return this.#session?.raiseEvent(event) ?? false;
  }

  /** Closes the socket we created (and its path); forgets an inherited one. */
  #releaseListener(): void {
    if (this.#createdPath && this.#listenFd !== undefined) {
      native.close(this.#listenFd);
      try {
        unlinkSync(this.#options.socketPath!);
      } catch {
        // Already gone.
      }
    }
    this.#listenFd = undefined;
    this.#createdPath = false;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poll !== undefined) native.pollStop(this.#poll);
    this.#poll = undefined;
    this.#session?.close(undefined);
    if (this.#listenFd !== undefined) native.close(this.#listenFd);
    this.#listenFd = undefined;
    if (this.#createdPath && this.#options.socketPath !== undefined) {
      try {
        unlinkSync(this.#options.socketPath);
      } catch {
        // Already gone: nothing to clean.
      }
    }
    this.#storage?.close();
  }

  #accept(): void {
    for (;;) {
      let fd: number;
      try {
        fd = native.unixAccept(this.#listenFd!);
      } catch (err) {
        this.#internalError(new SystemError('accept failed', err));
        return;
      }
      if (fd < 0) return;
      this.#session?.catchUp();
      if (this.#session !== undefined || this.#closed) {
        // One frontend at a time: a second one learns at once rather than hanging.
        native.close(fd);
        continue;
      }
      this.#stats.connections++;
      this.#session = new Session(fd, {
        options: this.#options,
        device: this.#device!,
        ringCount: this.#ringCount,
        features: this.#features,
        config: this.#config,
        stats: this.#stats,
        onClose: (error) => {
          this.#session = undefined;
          this.emit('disconnect', error);
        },
        onProtocolError: (error: ProtocolError) => this.emit('protocol-error', error),
        onInternalError: (error) => this.#internalError(error),
      });
      this.emit('connection');
    }
  }

  /** 'error' is only emitted with a listener: an EventEmitter would throw it otherwise. */
  #internalError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }
}

function checkEvent(event: ScsiEvent): void {
  if (typeof event !== 'object' || event === null) {
    throw new InvalidArgumentError('event must be an object');
  }
  const fields: [keyof ScsiEvent, number][] = [
    ['event', 0x7fff_ffff],
    ['target', VIRTIO_SCSI_MAX_TARGET],
    ['lun', VIRTIO_SCSI_MAX_LUN],
    ['reason', 0xffff_ffff],
  ];
  for (const [name, max] of fields) {
    const value = event[name];
    if (value === undefined && name !== 'event') continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
      throw new InvalidArgumentError(
        `event.${name} must be an integer in [0, ${max}], got ${String(value)}`,
      );
    }
  }
}

/** --fd: it must be an open socket (whether it listens only accept can tell). */
function checkListenFd(fd: number): void {
  let isSocket: boolean;
  try {
    isSocket = fstatSync(fd).isSocket();
  } catch (err) {
    throw new SystemError(`listening fd ${fd} is not an open file descriptor`, err);
  }
  if (!isSocket) throw new InvalidArgumentError(`listening fd ${fd} is not a socket`);
}

/** A socket file left by a process that died; anything else at that path is not ours to remove. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Creates a vhost-user-blk (or, with type 'scsi', vhost-user-scsi) backend serving a file or a
 * RAM disk. Nothing is opened until
 * listen(). @throws InvalidArgumentError for bad options
 */
export function createBlockServer(options: BlockServerOptions): BlockServer {
  return new BlockServerImpl(resolveOptions(options));
}
