import { describeSession } from '../database/vacuum-horizon.js'
import type { DeadEvent } from '../ops/dead.js'
import type { OutboxStatus } from '../ops/monitor.js'

/** Seconds as people read them: `0.25 s`, `3.2 s`, `312 s`. */
export function formatSeconds(seconds: number): string {
  const digits = seconds < 1 ? 2 : seconds < 10 ? 1 : 0
  return `${Number(seconds.toFixed(digits))} s`
}

/** What `--max-lag` and `--max-dead` set; undefined: not checked. */
export interface StatusLimits {
  maxLagMs?: number
  maxDead?: number
}

/** The limits a status exceeds, each as one phrase: `lag 312 s exceeds --max-lag 60 s`. */
export function statusViolations(status: OutboxStatus, limits: StatusLimits): string[] {
  const violations: string[] = []
  if (limits.maxLagMs !== undefined && status.oldestPendingSeconds * 1000 > limits.maxLagMs) {
    violations.push(`lag ${formatSeconds(status.oldestPendingSeconds)} exceeds --max-lag ${formatSeconds(limits.maxLagMs / 1000)}`)
  }
  if (limits.maxDead !== undefined && status.dead > limits.maxDead) {
    violations.push(`${status.dead} dead events exceed --max-dead ${limits.maxDead}`)
  }
  return violations
}

/** The summary `outbox-poller status` prints: totals, lag, latency, then per event type and per connection. */
export function formatStatus(status: OutboxStatus, outboxName: string): string {
  const { latency } = status
  const p = (value: number | null) => (value === null ? '-' : formatSeconds(value))
  const lines = [
    `${outboxName} at ${status.at.toISOString()}`,
    `  pending    ${status.pending}  (due now ${status.due}, waiting for retry ${status.retrying}, suspect ${status.suspect})`,
    ...(status.pausedTypes.length === 0 && status.paused === 0 ? [] : [`  paused     ${status.paused}  (${status.pausedTypes.map((p) => `${p.pattern} since ${p.since.toISOString()} by ${p.pausedBy}`).join(', ') || 'no pause in force: outbox-poller resume releases them'})`]),
    `  dead       ${status.dead}`,
    `  processed  ${status.processedLastMinute} in the last minute, ${status.processedLastHour} in the last hour`,
    `  lag        ${formatSeconds(status.oldestPendingSeconds)}  (oldest pending event)`,
    `  latency    p50 ${p(latency.p50)}  p95 ${p(latency.p95)}  p99 ${p(latency.p99)}  (last 5 minutes)`,
  ]
  lines.push(...horizonLines(status.horizon), ...layoutLines(status.layout))
  for (const u of status.unusedOrderingIndexes) {
    lines.push(`  warning    index ${u.index} serves --ordering ${u.serves}, which the outbox no longer records (it records ${u.recorded}): every captured write still pays for it; once no replica orders so, drop it as the outbox's owner: ${u.drop}`)
  }
  for (const b of status.backfills) {
    const done = `${b.rows}/${b.total} rows (${b.total === 0 ? 100 : Math.floor((100 * b.rows) / b.total)}%) as ${b.eventType}${b.where === null ? '' : ` where ${b.where}`}`
    lines.push(`  backfill   ${b.table} ${done}, ${b.running ? 'running' : `stopped at key ${b.lastKey ?? '-'}: outbox-poller backfill ${b.table} --resume`}`)
  }
  for (const lost of status.lostCaptures) lines.push(`  capture    ${lost.table} ${lost.reason}`, `             capture it again: ${lost.recapture.command}`)
  if (status.types.length > 0) {
    lines.push('', ...table(['event type', 'pending', 'dead', 'processed 1h', 'p95 5m'], status.types.map((t) => [t.eventType, t.pending, t.dead, t.processedLastHour, p(t.p95)])))
  }
  lines.push('', status.replicas.length === 0 ? 'no outbox-poller connection' : `${status.replicas.length} outbox-poller connection${status.replicas.length === 1 ? '' : 's'}`)
  if (status.replicas.length > 0) {
    const since = (date: Date | null) => (date === null ? '-' : formatSeconds(Math.max(0, (status.at.getTime() - date.getTime()) / 1000)))
    lines.push(...table(['application name', 'pid', 'state', 'for'], status.replicas.map((r) => [r.applicationName, r.pid, r.state ?? '-', since(r.since)])))
  }
  return `${lines.join('\n')}\n`
}

/** The oldest snapshot (what VACUUM of the outbox waits for), then each warning about it, a slot or a prepared transaction. */
function horizonLines(horizon: OutboxStatus['horizon']): string[] {
  const s = horizon.oldestSnapshot
  const oldest = s === null ? 'none' : `${s.ageSeconds === null ? 'of unknown age' : formatSeconds(s.ageSeconds)} (pid ${s.pid}, ${describeSession(s)})`
  const hidden = horizon.seesAllSessions ? '' : '; other roles\' sessions are hidden: grant pg_read_all_stats to see them'
  return [`  snapshot   oldest ${oldest}${hidden}`, ...horizon.warnings.map((warning) => `  warning    ${warning}`)]
}

/** Plain, or partitioned with its partitions, then each warning about them. */
function layoutLines(layout: OutboxStatus['layout']): string[] {
  if (layout.partitionBy === null) return ['  layout     plain table']
  const newest = layout.newestEndsAt === null ? 'no range partition' : `the newest ends ${layout.newestEndsAt.toISOString()}`
  const ahead = layout.ahead < 0 ? 'none for now' : `${layout.ahead} ahead`
  const inDefault = layout.defaultRows === 0 ? 'the default partition empty' : `${layout.defaultRows} events in the default partition`
  return [
    `  layout     partitioned by ${layout.partitionBy}: ${layout.partitions} partition${layout.partitions === 1 ? '' : 's'}, ${newest}, ${ahead}; ${inDefault}`,
    ...layout.warnings.map((warning) => `  warning    ${warning}`),
  ]
}

/** The list `outbox-poller dead` prints, most recently dead first. */
export function formatDeadEvents(events: readonly DeadEvent[]): string {
  const rows = events.map((e) => [e.id, e.event_type, e.entity_id, e.attempts, e.dead_at.toISOString(), oneLine(e.last_error ?? '')])
  return `${table(['id', 'event type', 'entity id', 'attempts', 'dead at', 'last error'], rows).join('\n')}\n`
}

/** Columns two spaces apart, numbers (and their titles) right-aligned; the last column is not padded. */
function table(header: string[], rows: Array<Array<string | number>>): string[] {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => String(row[i]).length)))
  const right = header.map((_, i) => rows.length > 0 && typeof rows[0]![i] === 'number')
  const cell = (value: string | number, i: number, last: boolean) =>
    last ? String(value) : right[i] ? String(value).padStart(widths[i]!) : String(value).padEnd(widths[i]!)
  const line = (cells: Array<string | number>) => `  ${cells.map((value, i) => cell(value, i, i === cells.length - 1)).join('  ')}`.trimEnd()
  return [line(header), ...rows.map(line)]
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ')
  return flat.length > 120 ? `${flat.slice(0, 119)}…` : flat
}
