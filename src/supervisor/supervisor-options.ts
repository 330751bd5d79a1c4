import { DAY, defaults as pollerDefaults, durationOption, integerOption, type OptionNamer, rejectUnknownOptions } from '../poller/poller-options.js'

/** The supervisor's defaults (the memory ones also hold for a worker run alone). */
export const supervisorDefaults = {
  memoryLimitMb: 500,
  memoryCheckIntervalMs: 30_000,
  /** The poller's own default drain timeout: handler timeout + margin. */
  drainTimeoutMs: pollerDefaults.handlerTimeoutMs + pollerDefaults.drainMarginMs,
  crashLimit: 5,
  crashWindowMs: 60_000,
} as const

/** Options of the supervisor; durations are milliseconds as numbers, or strings read by `parseDuration`. */
export interface SupervisorOptions {
  /** Worker RSS in MB above which it is replaced (16 – 1048576). Default 500. */
  memoryLimitMb?: number | string
  /** How often the worker's memory is sampled (100 ms – 1 d). Default 30 s. */
  memoryCheckInterval?: number | string
  /** A stopping worker still busy after this is killed (1 ms – 1 d). The CLI passes the poller's resolved drain timeout. Default 40 s. */
  drainTimeout?: number | string
  /** Worker crashes (not charged to events) within `crashWindow` that make the supervisor give up (1–1000). Default 5. */
  crashLimit?: number | string
  /** Window for `crashLimit` (1 s – 1 d). Default 60 s. */
  crashWindow?: number | string
}

export interface ResolvedSupervisorOptions {
  readonly memoryLimitMb: number
  readonly memoryCheckIntervalMs: number
  readonly drainTimeoutMs: number
  readonly crashLimit: number
  readonly crashWindowMs: number
}

const supervisorOptionKeys = { memoryLimitMb: true, memoryCheckInterval: true, drainTimeout: true, crashLimit: true, crashWindow: true } as const satisfies Record<keyof SupervisorOptions, true>

/** Applies defaults, validates and freezes; errors name the option, the range and the value. */
export function resolveSupervisorOptions(input: SupervisorOptions, nameOf: OptionNamer<keyof SupervisorOptions> = (key) => key): ResolvedSupervisorOptions {
  rejectUnknownOptions(input, supervisorOptionKeys, 'supervisor')
  return Object.freeze({
    memoryLimitMb: integerOption(input.memoryLimitMb, nameOf('memoryLimitMb'), supervisorDefaults.memoryLimitMb, 16, 1_048_576),
    memoryCheckIntervalMs: durationOption(input.memoryCheckInterval, nameOf('memoryCheckInterval'), supervisorDefaults.memoryCheckIntervalMs, 100, DAY),
    drainTimeoutMs: durationOption(input.drainTimeout, nameOf('drainTimeout'), supervisorDefaults.drainTimeoutMs, 1, DAY),
    crashLimit: integerOption(input.crashLimit, nameOf('crashLimit'), supervisorDefaults.crashLimit, 1, 1000),
    crashWindowMs: durationOption(input.crashWindow, nameOf('crashWindow'), supervisorDefaults.crashWindowMs, 1000, DAY),
  })
}
