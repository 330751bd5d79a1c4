import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { outboxTable } from '../../src/outbox/outbox-table.js'
import { parsePartitionBy } from '../../src/outbox/partition-layout.js'
import { partitionRange, partitionsAhead, periodStart, wantedPartitions } from '../../src/outbox/partition-upkeep.js'

const outbox = outboxTable('app', 'Outbox')

describe('partition ranges', () => {
  it('a period starts at the UTC day or hour holding the instant', () => {
    expect(periodStart(new Date('2026-12-02T23:59:59.999Z'), 'day').toISOString()).toBe('2026-12-02T00:00:00.000Z')
    expect(periodStart(new Date('2026-12-02T14:30:00.000Z'), 'hour').toISOString()).toBe('2026-12-02T14:00:00.000Z')
  })

  it('names a partition after its period and bounds it [from, to), quoted in the outbox schema', () => {
    const day = partitionRange(outbox, 'day', new Date('2026-12-31T00:00:00Z'))
    expect(day).toEqual({ name: 'Outbox_p20261231', qualified: '"app"."Outbox_p20261231"', from: new Date('2026-12-31T00:00:00Z'), to: new Date('2027-01-01T00:00:00Z') })
    expect(partitionRange(outbox, 'hour', new Date('2026-12-02T09:00:00Z')).name).toBe('Outbox_p2026120209')
  })

  it('wants the current period and the ones ahead, consecutive', () => {
    const wanted = wantedPartitions(outbox, 'hour', new Date('2026-12-02T23:10:00Z'))
    expect(wanted).toHaveLength(partitionsAhead.hour + 1)
    expect(wanted[0]!.name).toBe('Outbox_p2026120223')
    expect(wanted[1]!.name).toBe('Outbox_p2026120300')
    for (let i = 1; i < wanted.length; i++) expect(wanted[i]!.from).toEqual(wanted[i - 1]!.to)
  })

  it('--partition-by takes day or hour, else a one-line usage error', () => {
    expect(parsePartitionBy('day')).toBe('day')
    expect(parsePartitionBy(undefined)).toBeUndefined()
    expect(() => parsePartitionBy('week')).toThrow(ConfigError)
    expect(() => parsePartitionBy('week')).toThrow('--partition-by must be day or hour (got "week")')
  })
})
