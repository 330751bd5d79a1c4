import { describe, expect, it } from 'vitest'
import { describeTarget } from '../../src/database/connect.js'
import { checkDatabaseUrl, hostList } from '../../src/database/database-url.js'
import { ConfigError } from '../../src/errors.js'

/** The ConfigError message `checkDatabaseUrl` gives for `url`, or undefined when it accepts it. */
function problem(url: string, name = 'DATABASE_URL'): string | undefined {
  try {
    checkDatabaseUrl(url, name)
    return undefined
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as Error).message
  }
}

describe('database URL validation', () => {
  it('accepts what postgres.js reads: both schemes, host lists, sockets, %-escapes, every sslmode', () => {
    for (const url of [
      'postgres://app:s3cret@db.internal:6432/app',
      'postgresql://app@h1:5432,h2:5433/app?sslmode=verify-full',
      'postgres:///app?host=/var/run/postgresql',
      'postgres://app:p%40ss@h/my%20app',
      'POSTGRES://h/app?sslmode=disable',
    ]) {
      expect(problem(url), url).toBeUndefined()
    }
  })

  it('says what is wrong, naming the variable or flag the URL came from, and never repeats a password', () => {
    const cases: Array<[string, RegExp]> = [
      ['not a url', /^DATABASE_URL must be a PostgreSQL URL such as postgres:\/\//],
      ['postgres://app:s3cret@127.0.0.1:99999/app', /^DATABASE_URL has port 99999: a port is between 1 and 65535$/],
      ['postgres://app:s3cret@h1:5432,h2:0/app', /^DATABASE_URL has port 0/],
      ['postgres://app:s3cret%zz@127.0.0.1/app', /^DATABASE_URL has a malformed %-escape/],
      ['mysql://app:s3cret@127.0.0.1/app', /^DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL \(got mysql:\/\/…\)$/],
      ['postgres://app:s3cret@h/app?sslmode=always', /^DATABASE_URL has sslmode=always: use one of disable, allow, prefer, require, verify-ca, verify-full$/],
    ]
    for (const [url, message] of cases) {
      expect(problem(url), url).toMatch(message)
      expect(problem(url)).not.toContain('s3cret')
    }
    expect(problem('postgres://app:s3cret@[::1/app', '--database-url')).toMatch(/^--database-url is not a valid URL/)
  })

  it('reads the host list up to the first / or ?, after the last @', () => {
    expect(hostList('postgres://u:p@h1:5432,h2:5433/app?x=1')).toEqual({ hosts: 'h1:5432,h2:5433', firstHostUrl: 'postgres://u:p@h1:5432/app?x=1' })
    expect(hostList('postgres://u:p@ss@h/app')).toEqual({ hosts: 'h', firstHostUrl: 'postgres://u:p@ss@h/app' })
    expect(hostList('postgres:///app')).toEqual({ hosts: '', firstHostUrl: 'postgres:///app' })
  })
})

describe('describeTarget', () => {
  it('names the target by host, port and database: every host of a list, never the password', () => {
    expect(describeTarget('postgres://app:s3cret@db.internal:6432/my%20app')).toBe('db.internal:6432/my app')
    expect(describeTarget('postgres://app:s3@cret@h1:5432,h2:5433/app')).toBe('h1:5432,h2:5433/app')
    expect(describeTarget('postgres://app@h/app')).toBe('h:5432/app')
  })

  it('reads a socket directory from ?host, and says so when the string cannot be read', () => {
    expect(describeTarget('postgres:///app?host=/var/run/postgresql')).toBe('/var/run/postgresql:5432/app')
    expect(describeTarget('postgres:///app')).toBe('localhost:5432/app')
    expect(describeTarget('not a url')).toBe('the database (connection string could not be parsed)')
  })
})
