import { describe, expect, it } from 'vitest'
import { horizonWarnings, type VacuumHorizon } from '../../src/database/vacuum-horizon.js'

const quiet: VacuumHorizon = { oldestSnapshot: null, slots: [], preparedTransactions: [], seesAllSessions: true }
const report = { pid: 4242, user: 'alice', applicationName: 'psql', database: 'app', state: 'idle in transaction', ageSeconds: 0, xidAge: 90_000 }

describe('vacuum horizon warnings', () => {
  it('a snapshot, or a prepared transaction, warns only past the threshold (5 minutes by default), saying how to end it', () => {
    expect(horizonWarnings(quiet)).toEqual([])
    expect(horizonWarnings({ ...quiet, oldestSnapshot: { ...report, ageSeconds: 299 } })).toEqual([])
    expect(horizonWarnings({ ...quiet, oldestSnapshot: { ...report, ageSeconds: 301 } })).toEqual([
      'a snapshot 301 s old (pid 4242, application "psql", user alice, database app, idle in transaction) holds back VACUUM of the outbox: end it (SELECT pg_terminate_backend(4242))',
    ])
    expect(horizonWarnings({ ...quiet, oldestSnapshot: { ...report, ageSeconds: 11 } }, 10)).toHaveLength(1)
    expect(horizonWarnings({ ...quiet, preparedTransactions: [{ gid: 'tx1', database: 'app', ageSeconds: 600 }, { gid: 'tx2', database: 'app', ageSeconds: 5 }] })).toEqual([
      "prepared transaction 'tx1' in app, 600 s old, holds back VACUUM of the outbox: COMMIT PREPARED or ROLLBACK PREPARED it",
    ])
  })

  it('an inactive replication slot that holds an xmin warns; an active one (a standby with feedback) does not', () => {
    expect(horizonWarnings({ ...quiet, slots: [{ name: 'standby', active: true, xidAge: 10 }] })).toEqual([])
    expect(horizonWarnings({ ...quiet, slots: [{ name: 'gone', active: false, xidAge: 12_000 }] })).toEqual([
      'inactive replication slot gone holds back VACUUM of the outbox (12000 transactions): drop it or bring its consumer back',
    ])
  })
})
