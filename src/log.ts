import pino from 'pino'
import type { Logger } from './types.js'

/** The library's default: says nothing. */
export const silentLogger: Logger = pino({ level: 'silent' })

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof logLevels)[number]

/** JSON lines to stdout; connection strings are never logged, passwords are redacted wherever they appear. */
export function createLogger(level: LogLevel, name = 'outbox-poller'): pino.Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    redact: { paths: ['password', '*.password', 'connectionString', '*.connectionString'], censor: '[redacted]' },
  })
}
