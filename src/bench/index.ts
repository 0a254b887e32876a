/**
 * The benchmark core (`vhost-user bench`): fio-style jobs against a vhost-user-blk device.
 * @module
 */
export { runBench, VerifyError, FIO_PERCENTILES } from './run.js';
export {
  toFioJson,
  type FioJson,
  type FioJob,
  type FioDirection,
  type FioLat,
} from './fio-json.js';
export {
  parseJobFile,
  parseFioSize,
  parseFioTime,
  JobFileError,
  FIO_KEYS,
  type ParsedJobFile,
} from './job-file.js';
export {
  resolveBenchOptions,
  BENCH_RW,
  type BenchOptions,
  type BenchProgress,
  type BenchResult,
  type BenchRw,
  type DirectionResult,
  type GcPauses,
  type LatencyStats,
  type ResolvedBenchOptions,
} from './options.js';
export { crc32c } from './crc32c.js';
export { watchGcPauses, type GcPauseWatch } from './gc-pauses.js';
