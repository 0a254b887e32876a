/**
 * virtio-scsi request framing (virtio spec "SCSI Host Device: Device Operation") around one
 * ScsiTarget: command requests on the request queues (virtio_scsi_cmd_req + data-out readable,
 * virtio_scsi_cmd_resp + data-in writable), task management and asynchronous-notification
 * requests on the controlq, and events on the eventq. Like blk, requests are byte streams: a
 * struct may span descriptors.
 */

import {
  decodeVirtioLun,
  encodeVirtioLun,
  VIRTIO_SCSI_CDB_DEFAULT_SIZE,
  VIRTIO_SCSI_CONTROLQ,
  VIRTIO_SCSI_EVENT_LUN_OFFSET,
  VIRTIO_SCSI_EVENTQ,
  VIRTIO_SCSI_S_FUNCTION_COMPLETE,
  VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
  VIRTIO_SCSI_T_EVENTS_MISSED,
  VirtioScsiCmdReqHeader,
  VirtioScsiCmdRespHeader,
  VirtioScsiCtrlTmfReq,
  VIRTIO_SCSI_CTRL_TMF_LUN_OFFSET,
  VirtioScsiCtrlType,
  VirtioScsiEvent,
  VirtioScsiEventType,
  VirtioScsiResponse,
  VirtioScsiTmf,
} from '../devices/scsi/spec.js';
import type {
  DeviceModel,
  HeldRequests,
  QueueRole,
  RequestFault,
  RequestHooks,
  RequestResult,
  TaskRef,
} from './device-model.js';
import type { DeviceChain } from './device-queue.js';
import { slice } from './blk-device.js';
import type { ScsiFault, ScsiTarget } from './scsi-target.js';
import type { ServerStats } from './stats.js';
import { copyFromSegments, copyToSegments } from './storage.js';

/** An event for the eventq (virtio_scsi_event); target and LUN default to the server's. */
export interface ScsiEvent {
  /** VirtioScsiEventType, e.g. VIRTIO_SCSI_T_TRANSPORT_RESET or VIRTIO_SCSI_T_PARAM_CHANGE. */
  event: number;
  target?: number;
  lun?: number;
  /**
   * TRANSPORT_RESET: VIRTIO_SCSI_EVT_RESET_*; PARAM_CHANGE: asc | ascq << 8 (0x2a | 0x09 << 8
   * = capacity data has changed).
   */
  reason?: number;
}

/** The readable request: header, then the CDB (cdb_size is fixed at the default: no SET_CONFIG). */
const REQ_BYTES = VirtioScsiCmdReqHeader.size + VIRTIO_SCSI_CDB_DEFAULT_SIZE;
const RESP_HEADER_BYTES = VirtioScsiCmdRespHeader.size;
/** The writable response area before data-in: header and sense[sense_size]. */
const RESP_BYTES = RESP_HEADER_BYTES + VIRTIO_SCSI_SENSE_DEFAULT_SIZE;
/** struct virtio_scsi_ctrl_an_req: type, lun[8], event_requested; the reply: event_actual, response. */
const AN_REQ_BYTES = 16;
const AN_REQ_LUN_OFFSET = 4;
const AN_RESP_BYTES = 5;
const CTRL_TYPE_BYTES = 4;

/** The task-management faults (BlockServerFaults), and where TMFs are counted. */
export interface ScsiDeviceOptions {
  /** ABORT TASK is answered FUNCTION_REJECTED and leaves the command held. */
  rejectAbortTask?: boolean;
  /** LOGICAL UNIT RESET is answered FUNCTION_REJECTED and changes nothing. */
  rejectLunReset?: boolean;
  /** TMF requests are left unanswered (and not carried out). */
  ignoreTaskManagement?: boolean;
  /** Receives tmfAbortTask, tmfAbortMatched, tmfLunReset and tmfOther. */
  stats?: ServerStats;
}

/** Faults answered here, at the virtio level; the others are SCSI statuses from the target. */
const VIRTIO_FAULTS: Partial<Record<RequestFault, number>> = {
  'virtio-busy': VirtioScsiResponse.VIRTIO_SCSI_S_BUSY,
  'transport-failure': VirtioScsiResponse.VIRTIO_SCSI_S_TRANSPORT_FAILURE,
};

interface Response {
  response: number;
  status: number;
  sense: Uint8Array | undefined;
  /** Bytes of data-in written (0 when the command had none). */
  dataIn: number;
  resid: number;
}

export class ScsiDevice implements DeviceModel {
  readonly #target: ScsiTarget;
  readonly #targetId: number;
  readonly #req = Buffer.alloc(REQ_BYTES);
  readonly #tmf = Buffer.alloc(VirtioScsiCtrlTmfReq.size);
  readonly #rejectAbortTask: boolean;
  readonly #ignoreTaskManagement: boolean;
  readonly #rejectLunReset: boolean;
  readonly #stats: ServerStats | undefined;

  constructor(target: ScsiTarget, targetId: number, options: ScsiDeviceOptions = {}) {
    this.#target = target;
    this.#targetId = targetId;
    this.#rejectAbortTask = options.rejectAbortTask === true;
    this.#ignoreTaskManagement = options.ignoreTaskManagement === true;
    this.#rejectLunReset = options.rejectLunReset === true;
    this.#stats = options.stats;
  }

  roleOf(ring: number): QueueRole {
    if (ring === VIRTIO_SCSI_CONTROLQ) return 'control';
    if (ring === VIRTIO_SCSI_EVENTQ) return 'event';
    return 'request';
  }

  execute(chain: DeviceChain, fault?: RequestFault, hooks?: RequestHooks): RequestResult {
    // Not even room for a response header: nothing can be said about this request.
    if (chain.writableBytes < RESP_HEADER_BYTES) return { len: 0, rejected: chain.overLimit };
    const dataOutBytes = Math.max(0, chain.readableBytes - REQ_BYTES);
    const dataInBytes = Math.max(0, chain.writableBytes - RESP_BYTES);
    const failed = (response: number): Response => ({
      response,
      status: 0,
      sense: undefined,
      dataIn: 0,
      resid: dataInBytes > 0 ? dataInBytes : dataOutBytes,
    });
    if (chain.problem !== undefined || chain.readableBytes < REQ_BYTES) {
      const len = this.#respond(chain, failed(VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE));
      return { len, rejected: chain.overLimit };
    }
    const req = this.#req;
    copyFromSegments(chain.readable, 0, req);
    const header = VirtioScsiCmdReqHeader.decode(req.subarray(0, VirtioScsiCmdReqHeader.size));
    if (req[0] !== 1 || req[1] !== this.#targetId) {
      return this.#answer(chain, failed(VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET));
    }
    const address = decodeVirtioLun(req, 0);
    if (address === undefined) {
      return this.#answer(chain, failed(VirtioScsiResponse.VIRTIO_SCSI_S_INCORRECT_LUN));
    }
    const task: TaskRef = { tag: header.id, target: this.#targetId, lun: address.lun };
    const virtioFault = fault === undefined ? undefined : VIRTIO_FAULTS[fault];
    if (virtioFault !== undefined) {
      return { len: this.#respond(chain, failed(virtioFault)), rejected: false, task };
    }
    const outcome = this.#target.execute(
      {
        lun: address.lun,
        cdb: req.subarray(VirtioScsiCmdReqHeader.size),
        dataOut: slice(chain.readable, REQ_BYTES, dataOutBytes),
        dataIn: slice(chain.writable, RESP_BYTES, dataInBytes),
        fault: fault as ScsiFault | undefined,
      },
      hooks,
    );
    if (outcome.overrun) {
      const len = this.#respond(chain, failed(VirtioScsiResponse.VIRTIO_SCSI_S_OVERRUN));
      return { len, rejected: false, task };
    }
    const len = this.#respond(chain, {
      response: VirtioScsiResponse.VIRTIO_SCSI_S_OK,
      status: outcome.status,
      sense: outcome.sense,
      dataIn: dataInBytes > 0 ? outcome.transferred : 0,
      resid: Math.max(0, (dataInBytes > 0 ? dataInBytes : dataOutBytes) - outcome.transferred),
    });
    return { len, rejected: false, task };
  }

  /**
   * For task management: the response of a held command becomes `response` (ABORTED or RESET),
   * nothing transferred as far as the driver is concerned. Returns the used len.
   */
  #terminated(chain: DeviceChain, response: number): number {
    const dataOutBytes = Math.max(0, chain.readableBytes - REQ_BYTES);
    const dataInBytes = Math.max(0, chain.writableBytes - RESP_BYTES);
    return this.#respond(chain, {
      response,
      status: 0,
      sense: undefined,
      dataIn: 0,
      resid: dataInBytes > 0 ? dataInBytes : dataOutBytes,
    });
  }

  #answer(chain: DeviceChain, r: Response): RequestResult {
    return { len: this.#respond(chain, r), rejected: false };
  }

  /** Writes virtio_scsi_cmd_resp (and as much sense as fits); returns the used len. */
  #respond(chain: DeviceChain, r: Response): number {
    const area = Math.min(chain.writableBytes, RESP_BYTES);
    const out = Buffer.alloc(area);
    const senseLen = Math.min(r.sense?.length ?? 0, area - RESP_HEADER_BYTES);
    VirtioScsiCmdRespHeader.encodeInto(new DataView(out.buffer, out.byteOffset, area), 0, {
      senseLen,
      // A chain's buffers may add up to more than resid's u32 can say (they can even overlap).
      resid: Math.min(r.resid, 0xffff_ffff),
      statusQualifier: 0,
      status: r.status,
      response: r.response,
    });
    if (r.sense !== undefined) out.set(r.sense.subarray(0, senseLen), RESP_HEADER_BYTES);
    copyToSegments(chain.writable, 0, out);
    return area + r.dataIn;
  }

  control(chain: DeviceChain, held: HeldRequests): number | undefined {
    if (chain.problem !== undefined || chain.readableBytes < CTRL_TYPE_BYTES) {
      return this.#controlReply(chain, 0, VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE);
    }
    const typeBytes = Buffer.alloc(CTRL_TYPE_BYTES);
    copyFromSegments(chain.readable, 0, typeBytes);
    const type = typeBytes.readUInt32LE(0);
    switch (type) {
      case VirtioScsiCtrlType.VIRTIO_SCSI_T_TMF: {
        // The fault: no TMF is carried out or answered, not even a malformed one.
        if (chain.readableBytes < VirtioScsiCtrlTmfReq.size) {
          if (this.#ignoreTaskManagement) return undefined;
          return this.#controlReply(chain, 0, VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE);
        }
        copyFromSegments(chain.readable, 0, this.#tmf);
        const req = VirtioScsiCtrlTmfReq.decode(this.#tmf);
        this.#count(req.subtype);
        if (this.#ignoreTaskManagement) return undefined;
        const response = this.#taskManagement(req.subtype, req.id, held);
        return this.#controlReply(chain, 0, response);
      }
      case VirtioScsiCtrlType.VIRTIO_SCSI_T_AN_QUERY:
      case VirtioScsiCtrlType.VIRTIO_SCSI_T_AN_SUBSCRIBE: {
        if (chain.readableBytes < AN_REQ_BYTES || chain.writableBytes < AN_RESP_BYTES) {
          return this.#controlReply(chain, 4, VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE);
        }
        const req = Buffer.alloc(AN_REQ_BYTES);
        copyFromSegments(chain.readable, 0, req);
        const ours = req[AN_REQ_LUN_OFFSET] === 1 && req[AN_REQ_LUN_OFFSET + 1] === this.#targetId;
        // No asynchronous notification is supported: event_actual 0 (already zero below).
        return this.#controlReply(
          chain,
          4,
          ours ? VirtioScsiResponse.VIRTIO_SCSI_S_OK : VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET,
        );
      }
      default:
        return this.#controlReply(chain, 0, VirtioScsiResponse.VIRTIO_SCSI_S_FAILURE);
    }
  }

  /** Counts a TMF request as received (ServerStats.tmf*), whatever becomes of it. */
  #count(subtype: number): void {
    const stats = this.#stats;
    if (stats === undefined) return;
    if (subtype === VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK) stats.tmfAbortTask++;
    else if (subtype === VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET) stats.tmfLunReset++;
    else stats.tmfOther++;
  }

  /** Writes a control reply whose response byte is at `at` (zeroes before it); returns its len. */
  #controlReply(chain: DeviceChain, at: number, response: number): number {
    if (chain.writableBytes < at + 1) return 0;
    const out = Buffer.alloc(at + 1);
    out[at] = response;
    copyToSegments(chain.writable, 0, out);
    return at + 1;
  }

  /** SAM-5 task management functions, on the commands the pump still holds. */
  #taskManagement(subtype: number, tag: bigint, held: HeldRequests): number {
    const lunField = this.#tmf.subarray(VIRTIO_SCSI_CTRL_TMF_LUN_OFFSET);
    if (lunField[0] !== 1 || lunField[1] !== this.#targetId) {
      return VirtioScsiResponse.VIRTIO_SCSI_S_BAD_TARGET;
    }
    const address = decodeVirtioLun(lunField, 0);
    const onLun = (t: TaskRef): boolean => t.lun === address?.lun;
    const aborted = (c: DeviceChain): number =>
      this.#terminated(c, VirtioScsiResponse.VIRTIO_SCSI_S_ABORTED);
    const reset = (c: DeviceChain): number =>
      this.#terminated(c, VirtioScsiResponse.VIRTIO_SCSI_S_RESET);
    if (subtype === VirtioScsiTmf.VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET) {
      held.complete(() => true, reset);
      this.#target.reset();
      return VIRTIO_SCSI_S_FUNCTION_COMPLETE;
    }
    const lunFunctions: number[] = [
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK,
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK_SET,
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET,
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET,
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK,
      VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
    ];
    if (!lunFunctions.includes(subtype)) return VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED;
    if (address?.lun !== this.#target.lun) return VirtioScsiResponse.VIRTIO_SCSI_S_INCORRECT_LUN;
    const task = (t: TaskRef): boolean => onLun(t) && t.tag === tag;
    switch (subtype) {
      case VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK:
        // The fault: the command stays held, its delayed completion goes on as if nothing happened.
        if (this.#rejectAbortTask) return VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED;
        // Not held: it already completed, which SAM counts as done too.
        if (held.complete(task, aborted) > 0 && this.#stats !== undefined) {
          this.#stats.tmfAbortMatched++;
        }
        return VIRTIO_SCSI_S_FUNCTION_COMPLETE;
      case VirtioScsiTmf.VIRTIO_SCSI_T_TMF_ABORT_TASK_SET:
      case VirtioScsiTmf.VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET:
        held.complete(onLun, aborted);
        return VIRTIO_SCSI_S_FUNCTION_COMPLETE;
      case VirtioScsiTmf.VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET:
        if (this.#rejectLunReset) return VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_REJECTED;
        held.complete(onLun, reset);
        this.#target.reset();
        return VIRTIO_SCSI_S_FUNCTION_COMPLETE;
      case VirtioScsiTmf.VIRTIO_SCSI_T_TMF_QUERY_TASK:
        return held.has(task)
          ? VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_SUCCEEDED
          : VIRTIO_SCSI_S_FUNCTION_COMPLETE;
      default:
        return held.has(onLun)
          ? VirtioScsiResponse.VIRTIO_SCSI_S_FUNCTION_SUCCEEDED
          : VIRTIO_SCSI_S_FUNCTION_COMPLETE;
    }
  }

  writeEvent(chain: DeviceChain, event: unknown, missed: boolean): number {
    if (chain.problem !== undefined || chain.writableBytes < VirtioScsiEvent.size) return 0;
    const e = event as ScsiEvent | undefined;
    const out = Buffer.alloc(VirtioScsiEvent.size);
    const code = e?.event ?? VirtioScsiEventType.VIRTIO_SCSI_T_NO_EVENT;
    VirtioScsiEvent.encodeInto(new DataView(out.buffer, out.byteOffset, out.length), 0, {
      event: (code | (missed ? VIRTIO_SCSI_T_EVENTS_MISSED : 0)) >>> 0,
      reason: e?.reason ?? 0,
    });
    if (e !== undefined) {
      encodeVirtioLun(
        out,
        VIRTIO_SCSI_EVENT_LUN_OFFSET,
        e.target ?? this.#targetId,
        e.lun ?? this.#target.lun,
      );
    }
    copyToSegments(chain.writable, 0, out);
    return out.length;
  }
}
