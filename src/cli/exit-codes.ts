/** Exit codes, the same for every command (listed in the README). */
export const ExitCode = {
  ok: 0,
  /** Runtime failure: database unreachable, a failed health check. */
  failure: 1,
  /** Usage or configuration error, including an unknown option. */
  usage: 2,
  /** A worker that drained for a memory restart. */
  memoryRestart: 75,
} as const
