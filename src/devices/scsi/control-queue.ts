/**
 * The virtio-scsi control queue, used for task management: ABORT TASK for a command whose caller
 * gave up, escalating to LOGICAL UNIT RESET when the abort is refused or leaves the command with
 * the device. TMFs that find no free slot wait in a list and go out as slots return.
 */

import { QueueBrokenError } from '../../errors.js';
import type { SplitVirtqueue, Segment } from '../../virtqueue/split.js';
import { kickIfNeeded, type DeviceQueue } from '../device.js';
import {
  encodeVirtioLun,
  VIRTIO_SCSI_CTRL_TMF_LUN_OFFSET,
  VIRTIO_SCSI_CTRL_TMF_RESP_BYTES,
  VirtioScsiCtrlTmfReq,
  VirtioScsiCtrlType,
} from './spec.js';

const SLOT_STRIDE = 64;
const RESP_OFFSET = 32;
const RESPONSE_NOT_WRITTEN = 0xff;

export interface TaskManagement {
  subtype: number;
  target: number;
  lun: number;
  /** The command's tag (ABORT TASK); 0 for functions that address a whole LUN. */
  tag: bigint;
  /**
   * The device's response byte (VIRTIO_SCSI_S_FUNCTION_COMPLETE...; 0xff if it returned the
   * request without writing one), or undefined if the device went away.
   */
  onResponse(response: number | undefined): void;
}

export class ScsiControlQueue implements DeviceQueue {
  readonly vq: SplitVirtqueue;
  readonly kickFd: number;
  readonly callFd: number;
  /** Its task management requests go on when callers give up, idle or not. */
  readonly filledByEngineOnly = false;
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  readonly #areaOffset: number;
  readonly #areaGpa: number;
  readonly #slots: (TaskManagement | undefined)[];
  readonly #waiting: TaskManagement[] = [];
  readonly #segs: Segment[] = [
    { gpa: 0, len: VirtioScsiCtrlTmfReq.size, write: false },
    { gpa: 0, len: VIRTIO_SCSI_CTRL_TMF_RESP_BYTES, write: true },
  ];
  #inFlight = 0;
  readonly #completeOne = (slot: number): void => this.#complete(slot);

  constructor(
    ring: { vq: SplitVirtqueue; kickFd: number; callFd: number },
    area: { buffer: SharedArrayBuffer; offset: number; gpa: number },
  ) {
    this.vq = ring.vq;
    this.kickFd = ring.kickFd;
    this.callFd = ring.callFd;
    this.#view = new DataView(area.buffer);
    this.#bytes = new Uint8Array(area.buffer);
    this.#areaOffset = area.offset;
    this.#areaGpa = area.gpa;
    this.#slots = new Array<TaskManagement | undefined>(this.vq.size).fill(undefined);
  }

  static areaBytes(size: number): number {
    return size * SLOT_STRIDE;
  }

  get inFlight(): number {
    return this.#inFlight + this.#waiting.length;
  }

  submit(tmf: TaskManagement): void {
    if (this.vq.broken) {
      tmf.onResponse(undefined);
      return;
    }
    if (!this.#trySubmit(tmf)) this.#waiting.push(tmf);
  }

  #trySubmit(tmf: TaskManagement): boolean {
    const slot = this.#slots.indexOf(undefined);
    if (slot < 0 || !this.vq.canAdd(2)) return false;
    const base = this.#areaOffset + slot * SLOT_STRIDE;
    const gpa = this.#areaGpa + slot * SLOT_STRIDE;
    VirtioScsiCtrlTmfReq.encodeInto(this.#view, base, {
      type: VirtioScsiCtrlType.VIRTIO_SCSI_T_TMF,
      subtype: tmf.subtype,
      id: tmf.tag,
    });
    encodeVirtioLun(this.#bytes, base + VIRTIO_SCSI_CTRL_TMF_LUN_OFFSET, tmf.target, tmf.lun);
    this.#bytes[base + RESP_OFFSET] = RESPONSE_NOT_WRITTEN;
    this.#segs[0]!.gpa = gpa;
    this.#segs[1]!.gpa = gpa + RESP_OFFSET;
    if (!this.vq.add(this.#segs, slot)) return false;
    this.#slots[slot] = tmf;
    this.#inFlight++;
    this.vq.publish();
    return true;
  }

  kick(): void {
    kickIfNeeded(this.vq, this.kickFd);
  }

  drain(): number {
    const n = this.vq.drain(this.#completeOne);
    let resubmitted = false;
    while (this.#waiting.length > 0 && this.#trySubmit(this.#waiting[0]!)) {
      this.#waiting.shift();
      resubmitted = true;
    }
    // TMFs that waited for a slot must not also wait for someone else's kick.
    if (resubmitted) this.kick();
    return n;
  }

  usesMemory(): boolean {
    return false;
  }

  abandonAll(): void {
    const pending = [...this.#slots.filter((t) => t !== undefined), ...this.#waiting];
    this.#slots.fill(undefined);
    this.#waiting.length = 0;
    this.#inFlight = 0;
    for (const tmf of pending) tmf!.onResponse(undefined);
  }

  #complete(slot: number): void {
    const tmf = this.#slots[slot];
    if (tmf === undefined) {
      throw new QueueBrokenError(this.vq.index, `used element for idle control slot ${slot}`);
    }
    this.#slots[slot] = undefined;
    this.#inFlight--;
    const response = this.#bytes[this.#areaOffset + slot * SLOT_STRIDE + RESP_OFFSET]!;
    // An unwritten response (still the preset 0xff) is passed on: it is no success.
    tmf.onResponse(response);
  }
}
