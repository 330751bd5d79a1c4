import type { Sql } from 'postgres'
import { parseDuration } from '../duration.js'
import { ConfigError } from '../errors.js'
import { type DeadSelection, outboxDeadCount, outboxDeleteDead } from '../ops/dead.js'
import { outboxPause, outboxResume } from '../ops/pause.js'
import { outboxReplay, outboxReplayCount, type ReplaySelection } from '../ops/replay.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { consoleConfirmLimit } from './console-options.js'

/** A submitted form: every value of each field, in order. */
export type FormFields = Map<string, string[]>

/** What an action did, or the count it needs confirmed first. */
export type ActionOutcome =
  | { kind: 'done'; message: string; count: number; back: string; detail: Record<string, unknown> }
  | { kind: 'confirm'; description: string; count: number; back: string }

export const consoleActions = ['replay-dead', 'delete-dead', 'replay-processed', 'pause', 'resume'] as const
export type ConsoleAction = (typeof consoleActions)[number]

/**
 * Runs one console action with the CLI's own functions (replay, dead --delete, pause, resume), so console
 * and CLI always mean the same events. Each is idempotent; one that would change more than
 * consoleConfirmLimit events runs only when the form confirms that very count.
 */
export async function runConsoleAction(sql: Sql, outbox: OutboxTable, action: ConsoleAction, form: FormFields, actor: string): Promise<ActionOutcome> {
  const one = (name: string) => form.get(name)?.[0]?.trim() ?? ''
  const confirmed = (count: number) => count <= consoleConfirmLimit || one('confirm') === String(count)
  switch (action) {
    case 'pause': {
      const pattern = pattern_(one('pattern'))
      const added = await outboxPause(sql, outbox, pattern, actor)
      return done(added ? `paused ${pattern}` : `${pattern} was already paused`, added ? 1 : 0, '/', { pattern })
    }
    case 'resume': {
      const pattern = pattern_(one('pattern'))
      const { wasPaused, released } = await outboxResume(sql, outbox, pattern, { chunkSize: 5000 })
      return done(`${wasPaused ? 'resumed' : 'was not paused:'} ${pattern}; ${released} waiting events back in the queue`, released, '/', { pattern })
    }
    case 'replay-dead':
    case 'delete-dead': {
      const selection = await deadSelection(sql, form, one)
      const back = deadBack(one)
      const count = action === 'replay-dead' ? await outboxReplayCount(sql, outbox, { dead: true, ...selection }) : await outboxDeadCount(sql, outbox, selection)
      const verb = action === 'replay-dead' ? 'Replay dead events' : 'Delete dead events'
      if (!confirmed(count)) return { kind: 'confirm', description: verb, count, back }
      const changed = action === 'replay-dead' ? await outboxReplay(sql, outbox, { dead: true, ...selection, chunkSize: 500 }) : await outboxDeleteDead(sql, outbox, { ...selection, chunkSize: 1000 })
      return done(`${action === 'replay-dead' ? 're-queued' : 'deleted'} ${changed} dead event${changed === 1 ? '' : 's'}`, changed, back, describe(selection))
    }
    case 'replay-processed': {
      const since = one('since')
      if (since === '') throw new ConfigError('replaying processed events needs a time: processed within, e.g. 1h')
      const selection: ReplaySelection = { processed: true, typePattern: pattern_(one('type') || '*'), since: await ago(sql, parseDuration(since, 'processed within')) }
      const count = await outboxReplayCount(sql, outbox, selection)
      if (!confirmed(count)) return { kind: 'confirm', description: 'Replay processed events', count, back: '/types' }
      const replayed = await outboxReplay(sql, outbox, { ...selection, chunkSize: 500 })
      return done(`re-queued ${replayed} processed event${replayed === 1 ? '' : 's'}`, replayed, '/types', describe(selection))
    }
  }
}

function done(message: string, count: number, back: string, detail: Record<string, unknown>): ActionOutcome {
  return { kind: 'done', message, count, back, detail }
}

function pattern_(value: string): string {
  parseEventTypePattern(value, 'pattern')
  return value
}

/** Selected ids (`id` fields), or, with `all`, the list's filter (type, died within). Never everything by accident. */
async function deadSelection(sql: Sql, form: FormFields, one: (name: string) => string): Promise<DeadSelection> {
  if (one('all') === '1') {
    const type = one('type')
    const since = one('since')
    return { typePattern: type === '' ? undefined : pattern_(type), since: since === '' ? undefined : await ago(sql, parseDuration(since, 'died within')) }
  }
  const ids = form.get('id') ?? []
  if (ids.length === 0) throw new ConfigError('select at least one event')
  const bad = ids.find((id) => !/^\d{1,19}$/.test(id))
  if (bad !== undefined) throw new ConfigError(`not an event row id: ${JSON.stringify(bad)}`)
  return { ids }
}

function deadBack(one: (name: string) => string): string {
  const query = new URLSearchParams()
  if (one('type') !== '') query.set('type', one('type'))
  if (one('since') !== '') query.set('since', one('since'))
  return `/dead${query.size > 0 ? `?${query}` : ''}`
}

function describe(selection: DeadSelection | ReplaySelection): Record<string, unknown> {
  return { type: selection.typePattern, ids: selection.ids?.length, since: selection.since?.toISOString() }
}

async function ago(sql: Sql, ms: number): Promise<Date> {
  const [row] = await sql<{ since: Date }[]>`select now() - ${ms}::float8 * interval '1 millisecond' as since`
  return row!.since
}
