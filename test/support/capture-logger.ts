import type { Logger } from '../../src/types.js'

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error'
  msg: string
  fields: Record<string, unknown>
}

/** A pino-shaped logger that keeps what it is given, for tests that check what the poller logs. */
export function captureLogger(entries: LogEntry[] = [], bound: Record<string, unknown> = {}): Logger & { entries: LogEntry[] } {
  const at = (level: LogEntry['level']) => (fields: unknown, msg?: string) => {
    if (typeof fields === 'string') entries.push({ level, msg: fields, fields: { ...bound } })
    else entries.push({ level, msg: msg ?? '', fields: { ...bound, ...(fields as Record<string, unknown>) } })
  }
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (more: Record<string, unknown>) => captureLogger(entries, { ...bound, ...more }) } as never
}
