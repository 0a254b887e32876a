/**
 * virtio-scsi (virtio spec, "SCSI Host Device"): feature bits, config space, and the structs that
 * travel on the control, event and request queues. Multi-byte virtio fields are little-endian;
 * the SCSI payloads they carry (CDBs, sense, parameter data) are big-endian and live in cdb.ts,
 * sense.ts and data.ts.
 */

import { OutOfRangeError } from '../../errors.js';
import { VHOST_USER_VRING_IDX_MASK } from '../../protocol/messages.js';
import { defineStruct, u8, u16, u32, u64 } from '../../protocol/struct.js';

/** Feature bits. */
export const VirtioScsiFeature = {
  VIRTIO_SCSI_F_INOUT: 0,
  VIRTIO_SCSI_F_HOTPLUG: 1,
  VIRTIO_SCSI_F_CHANGE: 2,
  VIRTIO_SCSI_F_T10_PI: 3,
} as const;

/** Queue indexes: the request queues follow the two fixed ones. */
export const VIRTIO_SCSI_CONTROLQ = 0;
export const VIRTIO_SCSI_EVENTQ = 1;
export const VIRTIO_SCSI_FIRST_REQUESTQ = 2;

/** Sizes every implementation uses unless the driver writes others into the config. */
export const VIRTIO_SCSI_CDB_DEFAULT_SIZE = 32;
export const VIRTIO_SCSI_SENSE_DEFAULT_SIZE = 96;

/** struct virtio_scsi_config. */
export const VirtioScsiConfig = defineStruct('virtio_scsi_config', 36, {
  numQueues: u32(0),
  segMax: u32(4),
  maxSectors: u32(8),
  cmdPerLun: u32(12),
  eventInfoSize: u32(16),
  senseSize: u32(20),
  cdbSize: u32(24),
  maxChannel: u16(28),
  maxTarget: u16(30),
  maxLun: u32(32),
});
export type VirtioScsiConfigValues = ReturnType<typeof VirtioScsiConfig.decode>;

/** The 8-byte LUN field of every virtio-scsi request: bytes 0..7 hold LUN_BYTES. */
export const LUN_BYTES = 8;

/**
 * struct virtio_scsi_cmd_req without its trailing cdb[cdb_size]: lun[8] is bytes 0..7 (see
 * encodeVirtioLun), then the tag, task attribute, priority and command reference number.
 */
export const VirtioScsiCmdReqHeader = defineStruct('virtio_scsi_cmd_req', 19, {
  id: u64(8),
  taskAttr: u8(16),
  prio: u8(17),
  crn: u8(18),
});

/** struct virtio_scsi_cmd_resp without its trailing sense[sense_size]. */
export const VirtioScsiCmdRespHeader = defineStruct('virtio_scsi_cmd_resp', 12, {
  senseLen: u32(0),
  resid: u32(4),
  statusQualifier: u16(8),
  status: u8(10),
  response: u8(11),
});

/** Task attributes (virtio_scsi_cmd_req.task_attr). */
export const VIRTIO_SCSI_S_SIMPLE = 0;
export const VIRTIO_SCSI_S_ORDERED = 1;
export const VIRTIO_SCSI_S_HEAD = 2;
export const VIRTIO_SCSI_S_ACA = 3;

/** Control queue request types. */
export const VirtioScsiCtrlType = {
  VIRTIO_SCSI_T_TMF: 0,
  VIRTIO_SCSI_T_AN_QUERY: 1,
  VIRTIO_SCSI_T_AN_SUBSCRIBE: 2,
} as const;

/** Task management functions (virtio_scsi_ctrl_tmf_req.subtype). */
export const VirtioScsiTmf = {
  VIRTIO_SCSI_T_TMF_ABORT_TASK: 0,
  VIRTIO_SCSI_T_TMF_ABORT_TASK_SET: 1,
  VIRTIO_SCSI_T_TMF_CLEAR_ACA: 2,
  VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET: 3,
  VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET: 4,
  VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET: 5,
  VIRTIO_SCSI_T_TMF_QUERY_TASK: 6,
  VIRTIO_SCSI_T_TMF_QUERY_TASK_SET: 7,
} as const;

/** struct virtio_scsi_ctrl_tmf_req (lun[8] at bytes 8..15); the reply is one response byte. */
export const VirtioScsiCtrlTmfReq = defineStruct('virtio_scsi_ctrl_tmf_req', 24, {
  type: u32(0),
  subtype: u32(4),
  id: u64(16),
});
export const VIRTIO_SCSI_CTRL_TMF_LUN_OFFSET = 8;
export const VIRTIO_SCSI_CTRL_TMF_RESP_BYTES = 1;

/** struct virtio_scsi_event (lun[8] at bytes 4..11). */
export const VirtioScsiEvent = defineStruct('virtio_scsi_event', 16, {
  event: u32(0),
  reason: u32(12),
});
export const VIRTIO_SCSI_EVENT_LUN_OFFSET = 4;

/** Event codes (virtio_scsi_event.event). */
export const VirtioScsiEventType = {
  VIRTIO_SCSI_T_NO_EVENT: 0,
  VIRTIO_SCSI_T_TRANSPORT_RESET: 1,
  VIRTIO_SCSI_T_ASYNC_NOTIFY: 2,
  VIRTIO_SCSI_T_PARAM_CHANGE: 3,
} as const;
/** Or-ed into the event code when the device dropped events for lack of buffers. */
export const VIRTIO_SCSI_T_EVENTS_MISSED = 0x8000_0000;
/** Reasons of VIRTIO_SCSI_T_TRANSPORT_RESET. */
export const VIRTIO_SCSI_EVT_RESET_HARD = 0;
export const VIRTIO_SCSI_EVT_RESET_RESCAN = 1;
export const VIRTIO_SCSI_EVT_RESET_REMOVED = 2;

/** Response codes (virtio_scsi_cmd_resp.response and the TMF reply). */
export const VirtioScsiResponse = {
  VIRTIO_SCSI_S_OK: 0,
  VIRTIO_SCSI_S_OVERRUN: 1,
  VIRTIO_SCSI_S_ABORTED: 2,
  VIRTIO_SCSI_S_BAD_TARGET: 3,
  VIRTIO_SCSI_S_RESET: 4,
  VIRTIO_SCSI_S_BUSY: 5,
  VIRTIO_SCSI_S_TRANSPORT_FAILURE: 6,
  VIRTIO_SCSI_S_TARGET_FAILURE: 7,
  VIRTIO_SCSI_S_NEXUS_FAILURE: 8,
  VIRTIO_SCSI_S_FAILURE: 9,
  VIRTIO_SCSI_S_FUNCTION_SUCCEEDED: 10,
  VIRTIO_SCSI_S_FUNCTION_REJECTED: 11,
  VIRTIO_SCSI_S_INCORRECT_LUN: 12,
} as const;
/** TMF replies reuse VIRTIO_SCSI_S_OK as "function complete". */
export const VIRTIO_SCSI_S_FUNCTION_COMPLETE = 0;

/** The name of a response code, for messages. */
export function virtioScsiResponseName(response: number): string {
  for (const [name, value] of Object.entries(VirtioScsiResponse)) {
    if (value === response) return name;
  }
  return `response ${response}`;
}

/**
 * Most request queues a vhost-user-scsi device can have: vhost-user addresses rings 0..255 (an
 * 8-bit index in SET_VRING_KICK / CALL / ERR), and the control and event queues come first.
 */
export const VHOST_USER_SCSI_MAX_REQUEST_QUEUES = VHOST_USER_VRING_IDX_MASK + 1 - 2;

/** Largest target and LUN the 8-byte virtio-scsi LUN field can address. */
export const VIRTIO_SCSI_MAX_TARGET = 255;
export const VIRTIO_SCSI_MAX_LUN = 16383;

/**
 * Writes the virtio-scsi LUN field: byte 0 is 1, byte 1 the target, bytes 2..3 the LUN in SAM's
 * flat space addressing (0x40 | lun >> 8, lun & 0xff), bytes 4..7 zero.
 */
export function encodeVirtioLun(
  out: Uint8Array,
  offset: number,
  target: number,
  lun: number,
): void {
  // Out-of-range values would silently address another target or LUN.
  if (!(Number.isInteger(target) && target >= 0 && target <= VIRTIO_SCSI_MAX_TARGET)) {
    throw new OutOfRangeError(
      `virtio-scsi target ${target} is outside 0..${VIRTIO_SCSI_MAX_TARGET}`,
    );
  }
  if (!(Number.isInteger(lun) && lun >= 0 && lun <= VIRTIO_SCSI_MAX_LUN)) {
    throw new OutOfRangeError(`virtio-scsi LUN ${lun} is outside 0..${VIRTIO_SCSI_MAX_LUN}`);
  }
  out[offset] = 1;
  out[offset + 1] = target;
  out[offset + 2] = 0x40 | ((lun >> 8) & 0x3f);
  out[offset + 3] = lun & 0xff;
  out.fill(0, offset + 4, offset + LUN_BYTES);
}

/**
 * Reads a virtio-scsi LUN field. Returns undefined unless byte 0 is 1; the LUN may be in flat
 * space (0x40) or peripheral (0x00) addressing, which is what drivers send.
 */
export function decodeVirtioLun(
  bytes: Uint8Array,
  offset: number,
): { target: number; lun: number } | undefined {
  if (bytes[offset] !== 1) return undefined;
  const target = bytes[offset + 1]!;
  const method = bytes[offset + 2]! >> 6;
  const high = bytes[offset + 2]! & 0x3f;
  const low = bytes[offset + 3]!;
  if (method === 1) return { target, lun: (high << 8) | low };
  if (method === 0 && high === 0) return { target, lun: low };
  return undefined;
}
