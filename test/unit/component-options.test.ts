import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { resolveHttpOptions } from '../../src/observe/http-options.js'
import { resolveOptions } from '../../src/poller/poller-options.js'
import { resolveSupervisorOptions, supervisorDefaults } from '../../src/supervisor/supervisor-options.js'

describe('options per component', () => {
  it('the poller refuses keys it does not know, naming the key, among them the supervisor and HTTP options', () => {
    for (const key of ['http', 'memoryLimitMb', 'crashLimit', 'batchSise']) {
      expect(() => resolveOptions({ [key]: 1 } as never)).toThrow(ConfigError)
      expect(() => resolveOptions({ [key]: 1 } as never)).toThrow(`unknown poller option "${key}"`)
    }
  })

  it('the poller derives its drain timeout from the handler timeout, and the batch timeouts from it', () => {
    expect(resolveOptions({ handlerTimeout: '5s' })).toMatchObject({ drainTimeoutMs: 15_000, statementTimeoutMs: 15_000 })
    expect(resolveOptions({ drainTimeout: '1m' })).toMatchObject({ drainTimeoutMs: 60_000, statementTimeoutMs: 60_000 })
  })

  it('the poller listens by default; a listen URL is checked like the database URL and kept out of the resolved (logged) options', () => {
    expect(resolveOptions({}).listen).toBe(true)
    expect(resolveOptions({ listen: false }).listen).toBe(false)
    const resolved = resolveOptions({ listenUrl: 'postgres://poller:secret@db:5432/app' })
    expect(JSON.stringify(resolved)).not.toMatch(/secret|listenUrl/)
    expect(() => resolveOptions({ listenUrl: 'mysql://db/app' }, (key) => (key === 'listenUrl' ? '--listen-url' : key))).toThrow('--listen-url must be a postgres:// or postgresql:// URL (got mysql://…)')
    expect(() => resolveOptions({ listen: 'no' as never })).toThrow('listen must be true or false (got "no")')
  })

  it('the supervisor applies its defaults and freezes them', () => {
    const resolved = resolveSupervisorOptions({})
    expect(resolved).toEqual({ memoryLimitMb: 500, memoryCheckIntervalMs: 30_000, drainTimeoutMs: 40_000, crashLimit: 5, crashWindowMs: 60_000 })
    expect(supervisorDefaults.drainTimeoutMs).toBe(40_000)
    expect(Object.isFrozen(resolved)).toBe(true)
  })

  it('the supervisor names the option, the range and the value; and refuses unknown keys', () => {
    expect(() => resolveSupervisorOptions({ memoryLimitMb: '8' })).toThrow('memoryLimitMb must be an integer between 16 and 1048576 (got "8")')
    expect(() => resolveSupervisorOptions({ crashWindow: '0.5' }, (key) => `--${key}`)).toThrow('--crashWindow must be between 1000 ms and 86400000 ms (got "0.5")')
    expect(() => resolveSupervisorOptions({ crashLimit: 0 })).toThrow('crashLimit must be an integer between 1 and 1000 (got 0)')
    expect(() => resolveSupervisorOptions({ batchSize: 1 } as never)).toThrow('unknown supervisor option "batchSize"')
  })

  it('HTTP reads host:port, a bare port and off; a bad address names the option; unknown keys are refused', () => {
    expect(resolveHttpOptions({}).listen).toBeUndefined()
    expect(resolveHttpOptions({ http: 'off' }).listen).toBeUndefined()
    expect(resolveHttpOptions({ http: '9464' }).listen).toEqual({ host: '127.0.0.1', port: 9464 })
    expect(resolveHttpOptions({ http: '0.0.0.0:80' }).listen).toEqual({ host: '0.0.0.0', port: 80 })
    expect(resolveHttpOptions({ http: '[::1]:9464' }).listen).toEqual({ host: '::1', port: 9464 })
    expect(Object.isFrozen(resolveHttpOptions({ http: '9464' }))).toBe(true)
    expect(() => resolveHttpOptions({ http: 'localhost:99999' }, () => 'OUTBOX_POLLER_HTTP')).toThrow('OUTBOX_POLLER_HTTP must be host:port or a port between 1 and 65535 (got "localhost:99999")')
    expect(() => resolveHttpOptions({ port: 1 } as never)).toThrow('unknown HTTP option "port"')
  })
})
