import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { resolveOptions } from '../../src/poller/poller-options.js'
import { parseSchemaPatterns, schemaMatches, schemaPatternToLike } from '../../src/tenants/schema-pattern.js'
import { groupTenantEventIds, parseTenantEventId, tenantEventId } from '../../src/tenants/tenant-event-id.js'
import { TenantRotation } from '../../src/tenants/tenant-rotation.js'

describe('schema patterns', () => {
  it('treat * as the only wildcard: _ and % are literal', () => {
    expect(schemaPatternToLike('tenant_*')).toBe('tenant\\_%')
    expect(schemaPatternToLike('a%b\\c*')).toBe('a\\%b\\\\c%')
    expect(schemaMatches('tenant_*', 'tenant_1')).toBe(true)
    expect(schemaMatches('tenant_*', 'tenantx1')).toBe(false)
    expect(schemaMatches('tenant_*', 'tenant_')).toBe(true)
    expect(schemaMatches('*_eu', 'acme_eu')).toBe(true)
    expect(schemaMatches('a*b*c', 'abc')).toBe(true)
    expect(schemaMatches('a*b*c', 'acb')).toBe(false)
    expect(schemaMatches('a*aa', 'aa')).toBe(false)
    expect(schemaMatches('admin', 'admin')).toBe(true)
    expect(schemaMatches('admin', 'admins')).toBe(false)
  })

  it('are read from lists, commas or spaces, and refuse an empty list', () => {
    expect(parseSchemaPatterns(['tenant_*,admin', 'x  y'], '--schemas')).toEqual(['tenant_*', 'admin', 'x', 'y'])
    expect(parseSchemaPatterns('tenant_* tenant_*', '--schemas')).toEqual(['tenant_*'])
    expect(() => parseSchemaPatterns(' , ', '--schemas')).toThrow(ConfigError)
    expect(() => parseSchemaPatterns('x'.repeat(64), '--schemas')).toThrow(/at most 63 bytes/)
  })

  it('exclude --schema, and bound --tenant-concurrency and --discover-interval', () => {
    expect(resolveOptions({ schemas: 'tenant_*' })).toMatchObject({ schemas: ['tenant_*'], tenantConcurrency: 1, discoverIntervalMs: 30_000 })
    expect(resolveOptions({}).schemas).toBeUndefined()
    expect(() => resolveOptions({ schemas: 'tenant_*', schema: 'admin' })).toThrow('schema and schemas exclude each other')
    expect(() => resolveOptions({ schemas: 'a', tenantConcurrency: 0 })).toThrow('tenantConcurrency must be an integer between 1 and 100 (got 0)')
    expect(() => resolveOptions({ schemas: 'a', discoverInterval: '10ms' })).toThrow(/discoverInterval must be between 100 ms/)
  })
})

describe('tenant event ids', () => {
  it('name the schema, whatever it contains, and group by it', () => {
    expect(parseTenantEventId(tenantEventId('we:ird', '42'))).toEqual({ schema: 'we:ird', id: '42' })
    expect(parseTenantEventId('42')).toEqual({ schema: undefined, id: '42' })
    expect([...groupTenantEventIds(['a:1', '7', 'b:2', 'a:3'], 'public')]).toEqual([['a', ['1', '3']], ['public', ['7']], ['b', ['2']]])
  })
})

describe('the tenant rotation', () => {
  it('gives each tenant with work one batch per turn, so a hot tenant cannot starve the others', () => {
    const rotation = new TenantRotation<string>()
    for (const tenant of ['hot', 'a', 'b']) rotation.add(tenant)
    const order: string[] = []
    for (let i = 0; i < 9; i++) {
      const tenant = rotation.next(0)!
      order.push(tenant)
      rotation.done(tenant, tenant === 'hot' ? { again: true } : { idleUntil: 100 })
      if (i === 3) rotation.wake('a')
    }
    expect(order).toEqual(['hot', 'a', 'b', 'hot', 'hot', 'a', 'hot', 'hot', 'hot'])
  })

  it('costs an idle tenant nothing until it is woken or its safety poll falls due', () => {
    const rotation = new TenantRotation<string>()
    rotation.add('t')
    rotation.done(rotation.next(0)!, { idleUntil: 2000 })
    expect(rotation.next(1999)).toBeUndefined()
    expect(rotation.nextDueAt()).toBe(2000)
    expect(rotation.next(2000)).toBe('t')
  })

  it('claims a tenant on one slot at a time, and sends one woken while busy around again', () => {
    const rotation = new TenantRotation<string>()
    rotation.add('t')
    expect(rotation.next(0)).toBe('t')
    expect(rotation.next(0)).toBeUndefined()
    expect(rotation.wake('t')).toBe(false)
    rotation.done('t', { idleUntil: 10_000 })
    expect(rotation.next(0)).toBe('t')
  })

  it('forgets a removed tenant, even one busy when removed', () => {
    const rotation = new TenantRotation<string>()
    rotation.add('t')
    rotation.next(0)
    rotation.remove('t')
    rotation.done('t', { again: true })
    expect(rotation.has('t')).toBe(false)
    expect(rotation.next(0)).toBeUndefined()
  })
})
