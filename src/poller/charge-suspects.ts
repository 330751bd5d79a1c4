import type { Sql } from 'postgres'
import type { OutboxTable } from '../outbox/outbox-table.js'

/**
 * The record of a batch that died with events in hand (its worker crashed, or its batch kept dying): one
 * attempt charged to each event still unprocessed, marked suspect and due at once (isolation, not backoff,
 * is what slows it down). By id alone: the supervisor learns only the ids in flight from its worker, so on a
 * partitioned outbox this probes every partition's primary key once per id; it runs only after a crash.
 *
 * A batch of several events never holds a suspect (a suspect is claimed alone), so one that died charges only the
 * rows not suspect yet: when another replica claimed the events of a crashed batch before that crash was charged
 * (its locks go with its connection, its charge comes after) and died on the same poison, the first charge marked
 * them suspect, and this one must not charge the innocent ones again: each crash of a shared poison would cost
 * its batch-mates an attempt, and a few replicas dead-letter them all before isolation ever runs them alone.
 */
function chargeCrashQuery(outbox: OutboxTable): string {
  return `
      update ${outbox.qualified}
         set attempts = attempts + 1,
             last_error = $2,
             suspect = true,
             retry_at = now(),
             dead_at = case when attempts + 1 >= $3 then now() end
       where id = any($1::bigint[]) and processed_at is null and dead_at is null and (not suspect or cardinality($1::bigint[]) = 1)
      returning id::text as id, event_type, dead_at is not null as dead`
}

/** Charges a crash to the events one dead batch was handling. Returns the ids charged and the events dead-lettered. */
export async function outboxChargeCrash(sql: Sql, outbox: OutboxTable, ids: readonly string[], error: string, maxAttempts: number): Promise<{ charged: string[]; dead: Array<{ id: string; event_type: string }> }> {
  const rows = await sql.unsafe<Array<{ id: string; event_type: string; dead: boolean }>>(chargeCrashQuery(outbox), [ids as string[], error, maxAttempts])
  return { charged: rows.map((row) => row.id), dead: rows.filter((row) => row.dead) }
}
