import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listCaptures } from '../../src/capture/capture.js'
import { lostCaptures } from '../../src/capture/capture-registry.js'
import { migrate } from '../../src/outbox/migrate.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

const outbox = outboxTable('public', 'outbox')
let db: TestDatabase

// Two tables of the same shape and options, captured at 0004 (the release before set-based capture): the first
// is written before the upgrade, the second after it, with the same statements.
const columns = 'id int primary key, email text, password_hash text, plan text, doc json, updated_at timestamptz, deleted_at timestamptz'
const writes = [
  `insert into $t values (1, 'a@example.com', 'SECRET', 'free', '{"a": 1}', '2026-01-01', null)`,
  `insert into $t select n, n || '@example.com', 'SECRET', 'free', '{"s": "\\u0000"}', '2026-01-01', null from generate_series(2, 6) n`,
  `update $t set updated_at = '2026-02-01'`,
  `update $t set plan = 'pro', password_hash = 'SECRET2' where id <= 3`,
  `update $t set deleted_at = '2026-03-01' where id = 2`,
  `update $t set deleted_at = null where id = 2`,
  `delete from $t where id > 4`,
]

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
  await migrate({ sql: db.sql, target: '0004_capture_follows_columns' })
  for (const table of ['before_upgrade', 'after_upgrade']) {
    await db.sql.unsafe(`create table ${table} (${columns})`)
    await db.sql.unsafe(`select outbox_capture_table('${table}', 'account', 'id', '{updated_at}', '{}', '{password_hash}', 'deleted_at')`)
  }
  await db.sql`create schema ordered`
  await migrate({ sql: db.sql, schema: 'ordered', target: '0004_capture_follows_columns' })
  await db.sql`insert into ordered.outbox_settings (name, value) values ('ordering', 'entity, on dead: continue')`
})
afterAll(async () => {
  await db.drop()
})

async function run(table: string) {
  const [{ since }] = await db.sql`select coalesce(max(id), 0)::text as since from outbox`
  for (const statement of writes) await db.sql.unsafe(statement.replaceAll('$t', table))
  return db.sql`select event_type, entity_id, payload::text as payload from outbox where id > ${since}::bigint order by id`
}

describe('upgrading to set-based capture', () => {
  it('a table captured before keeps its row triggers and writes the same payloads, byte for byte', async () => {
    const before = await run('before_upgrade')
    expect(before).toHaveLength(6 + 3 + 2 + 2)
    expect((await migrate({ sql: db.sql })).applied).toEqual(expect.arrayContaining(['0005_capture_at_the_floor']))
    expect(await run('after_upgrade')).toEqual(before)
    expect(await lostCaptures(db.sql, outbox)).toEqual([])
    expect((await listCaptures(db.sql, outbox)).map((c) => [c.table, c.mode, c.excludeColumns])).toEqual([
      ['after_upgrade', 'row', ['password_hash']],
      ['before_upgrade', 'row', ['password_hash']],
    ])
  })

  it('the ordering index is dropped where no poller orders by entity, and kept where the outbox records that one does', async () => {
    const index = async (schema: string) => (await db.sql`select to_regclass(${`${schema}.outbox_entity_pending`})::text as name`)[0]!.name
    expect(await index('public')).toBeNull()
    await migrate({ sql: db.sql, schema: 'ordered' })
    expect(await index('ordered')).toBe('ordered.outbox_entity_pending')
  })
})
