/**
 * The virtio-scsi event queue: the driver keeps it stocked with empty event buffers, and the
 * device returns one when it has something to report (a LUN appeared or went, parameters
 * changed). Each returned buffer is decoded, reported and put back at once.
 */

import type { SplitVirtqueue, Segment } from '../../virtqueue/split.js';
import { kickIfNeeded, type DeviceQueue } from '../device.js';
import {
  decodeVirtioLun,
  VIRTIO_SCSI_EVENT_LUN_OFFSET,
  VIRTIO_SCSI_T_EVENTS_MISSED,
  VirtioScsiEvent,
  VirtioScsiEventType,
} from './spec.js';

/** An event the device reported, as `dev.on('event')` hands it to the application. */
export interface ScsiEvent {
  /** 'transport-reset' (a LUN appeared, went or was reset: `reason`), 'param-change'... */
  type: 'transport-reset' | 'param-change' | 'async-notify' | 'no-event' | 'unknown';
  /** VIRTIO_SCSI_T_* as the device sent it (without the missed-events bit). */
  event: number;
  target: number | undefined;
  lun: number | undefined;
  /**
   * The event's reason as sent: for a transport reset VIRTIO_SCSI_EVT_RESET_HARD (0), _RESCAN (1:
   * the LUN appeared) or _REMOVED (2); for a parameter change ASC | ASCQ << 8.
   */
  reason: number;
  /** PARAM_CHANGE: the additional sense code and qualifier the reason carries. */
  asc: number | undefined;
  ascq: number | undefined;
  /** The device dropped events before this one for want of buffers. */
  eventsMissed: boolean;
}

const EVENT_BYTES = VirtioScsiEvent.size;
/** Buffers kept posted: enough for a burst of hotplug events. */
export const EVENT_BUFFERS = 8;

export class ScsiEventQueue implements DeviceQueue {
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  /** Its buffers are put back as events are taken. */
  readonly filledByEngineOnly = false;
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  readonly #areaOffset: number;
  readonly #areaGpa: number;
  readonly #onEvent: (event: ScsiEvent) => void;
  readonly #seg: Segment[] = [{ gpa: 0, len: EVENT_BYTES, write: true }];
  readonly #completeOne = (slot: number, len: number): void => this.#complete(slot, len);

  constructor(
    ring: { vq: SplitVirtqueue; kickFd: number; callFd: number },
    area: { buffer: SharedArrayBuffer; offset: number; gpa: number },
    onEvent: (event: ScsiEvent) => void,
  ) {
    this.vq = ring.vq;
    this.kickFd = ring.kickFd;
    this.callFd = ring.callFd;
    this.#view = new DataView(area.buffer);
    this.#bytes = new Uint8Array(area.buffer);
    this.#areaOffset = area.offset;
    this.#areaGpa = area.gpa;
    this.#onEvent = onEvent;
  }

  static areaBytes(): number {
    return EVENT_BUFFERS * EVENT_BYTES;
  }

  /** Posted buffers are not requests: nothing waits for them, so polling ignores them. */
  get inFlight(): number {
    return 0;
  }

  /** Posts every buffer; call once the ring is set up. */
  stock(): void {
    const count = Math.min(EVENT_BUFFERS, this.vq.size);
    for (let slot = 0; slot < count; slot++) this.#post(slot);
  }

  #post(slot: number): void {
    this.#bytes.fill(
      0,
      this.#areaOffset + slot * EVENT_BYTES,
      this.#areaOffset + (slot + 1) * EVENT_BYTES,
    );
    this.#seg[0]!.gpa = this.#areaGpa + slot * EVENT_BYTES;
    if (this.vq.add(this.#seg, slot)) {
      this.vq.publish();
    }
  }

  kick(): void {
    kickIfNeeded(this.vq, this.kickFd);
  }

  drain(): number {
    const n = this.vq.drain(this.#completeOne);
    if (n > 0) this.kick();
    return n;
  }

  usesMemory(): boolean {
    return false;
  }

  abandonAll(): void {
    // Nothing waits on event buffers.
  }

  #complete(slot: number, len: number): void {
    const at = this.#areaOffset + slot * EVENT_BYTES;
    const raw = VirtioScsiEvent.decodeFrom(this.#view, at);
    const address = decodeVirtioLun(this.#bytes, at + VIRTIO_SCSI_EVENT_LUN_OFFSET);
    this.#post(slot);
    // A buffer returned without an event (len 0) is the device giving buffers back.
    if (len < EVENT_BYTES) return;
    const code = raw.event & ~VIRTIO_SCSI_T_EVENTS_MISSED;
    const paramChange = code === VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE;
    this.#onEvent({
      type: eventType(code),
      event: code,
      target: address?.target,
      lun: address?.lun,
      reason: raw.reason,
      asc: paramChange ? raw.reason & 0xff : undefined,
      ascq: paramChange ? (raw.reason >> 8) & 0xff : undefined,
      eventsMissed: (raw.event & VIRTIO_SCSI_T_EVENTS_MISSED) !== 0,
    });
  }
}

function eventType(code: number): ScsiEvent['type'] {
  switch (code) {
    case VirtioScsiEventType.VIRTIO_SCSI_T_NO_EVENT:
      return 'no-event';
    case VirtioScsiEventType.VIRTIO_SCSI_T_TRANSPORT_RESET:
      return 'transport-reset';
    case VirtioScsiEventType.VIRTIO_SCSI_T_ASYNC_NOTIFY:
      return 'async-notify';
    case VirtioScsiEventType.VIRTIO_SCSI_T_PARAM_CHANGE:
      return 'param-change';
    default:
      return 'unknown';
  }
}
