/**
 * What the request pump and the session need from a device type (virtio-blk, virtio-scsi): how
 * each ring is served, and the functions that answer its chains. The pump owns the rings, the
 * fault plan and the held (delayed) completions; the device only reads and writes chains.
 */

import { bit } from '../virtio/features.js';
import { VhostUserProtocolFeature } from '../protocol/messages.js';
import type { DeviceChain } from './device-queue.js';

/** Largest config space GET_CONFIG may ask for (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_BYTES = 256;

/** GET_PROTOCOL_FEATURES: only what this backend implements, for every device type. */
export const OFFERED_PROTOCOL_FEATURES =
  bit(VhostUserProtocolFeature.REPLY_ACK) |
  bit(VhostUserProtocolFeature.CONFIG) |
  bit(VhostUserProtocolFeature.MQ);

/**
 * How a ring is served. 'request': every chain is executed, counted by the fault plan and may be
 * held (delayCompletionsMs). 'control': answered at once, may complete held requests (task
 * management); a fault may leave one unanswered. 'event': chains stay in the avail ring until the
 * device has an event to put in one.
 */
export type QueueRole = 'request' | 'control' | 'event';

/** A fault the plan chose for one request; the device answers it without touching the storage. */
export type RequestFault =
  | 'io-error'
  | 'scsi-busy'
  | 'task-set-full'
  | 'virtio-busy'
  | 'transport-failure'
  | 'unit-attention';

/** Per-connection fault decisions a device asks for while it executes a request. */
export interface RequestHooks {
  /** Called for each READ: true if this one must transfer only half its data. */
  shortRead(): boolean;
}

/** Identifies a request for task management (virtio-scsi tag and addressing). */
export interface TaskRef {
  tag: bigint;
  target: number;
  lun: number;
}

export interface RequestResult {
  /** Bytes written into the chain (the used element's len). */
  len: number;
  /** The request broke an advertised limit (size_max, seg_max, discard limits). */
  rejected: boolean;
  /** Set when the request may be found by task management while it is held. */
  task?: TaskRef;
}

/** The requests whose completion the pump still holds (delayCompletionsMs), for task management. */
export interface HeldRequests {
  /**
   * Completes at once every held request whose task matches, after `rewrite` replaced its
   * response (it returns the new used len). Returns how many were completed.
   */
  complete(match: (task: TaskRef) => boolean, rewrite: (chain: DeviceChain) => number): number;
  /** True if a held request matches. */
  has(match: (task: TaskRef) => boolean): boolean;
}

export interface DeviceModel {
  /** How ring `ring` is served; absent: every ring is a request queue (virtio-blk). */
  roleOf?(ring: number): QueueRole;
  /** Runs a request-queue chain (or answers `fault` instead) and writes its response. Never throws. */
  execute(chain: DeviceChain, fault?: RequestFault, hooks?: RequestHooks): RequestResult;
  /**
   * Answers a control-queue chain; returns the used len, or undefined to leave it unanswered (a
   * fault: it stays in flight until the ring stops or the connection goes). Never throws.
   */
  control?(chain: DeviceChain, held: HeldRequests): number | undefined;
  /**
   * Writes `event` (undefined: an empty event that only reports `missed`) into an eventq buffer;
   * returns the used len, 0 if the buffer cannot hold an event. Never throws.
   */
  writeEvent?(chain: DeviceChain, event: unknown, missed: boolean): number;
}
