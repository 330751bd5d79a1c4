/**
 * Exit codes, the same for every command (listed in the README) and between the supervisor and its worker:
 * a worker that exits 1 or 2 before it was ready could not start, and the supervisor ends with its code.
 */
export const ExitCode = {
  ok: 0,
  /** Runtime failure: database unreachable, a failed health check, a crash loop. */
  failure: 1,
  /** Usage or configuration error, including an unknown option. */
  usage: 2,
  /** A worker run alone that drained for a memory restart. */
  memoryRestart: 75,
} as const
