import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { migrate } from '../../src/outbox/migrate.js'
import { createTestDatabase, type TestDatabase } from '../support/database.js'

// migrate among many tenants: it looks only at its own schema, so tenants being created and dropped next to
// it (a tenant deleted while `migrate --schemas` runs) cannot fail it.
let db: TestDatabase

beforeAll(async () => {
  db = await createTestDatabase({ migrate: false })
})
afterAll(async () => {
  await db.drop()
})

describe('migrate next to other schemas', () => {
  it('migrates while other schemas with tables are created and dropped at the same time', async () => {
    const churn = postgres(db.url, { max: 1, onnotice: () => {} })
    let churning = true
    let dropped = 0
    // the tables' columns: a migrator that read every table of every schema would trip on one dropped under it
    const columns = Array.from({ length: 40 }, (_, i) => `c${i} int`).join(', ')
    const churned = (async () => {
      for (let i = 0; churning; i++) {
        await churn.unsafe(`create schema churn_${i}; create table churn_${i}.a (id serial, ${columns}); create table churn_${i}.b (id serial, ${columns})`)
        await churn.unsafe(`drop schema churn_${i} cascade`)
        dropped++
      }
    })()
    try {
      for (let i = 0; i < 15; i++) {
        await db.sql.unsafe(`create schema tenant_${i}`)
        const { applied } = await migrate({ sql: db.sql, schema: `tenant_${i}` })
        expect(applied.length).toBeGreaterThan(0)
      }
    } finally {
      churning = false
      await churned
      await churn.end()
    }
    expect(dropped).toBeGreaterThan(10)
  })
})
