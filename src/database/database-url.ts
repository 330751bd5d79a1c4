import { ConfigError } from '../errors.js'

const example = 'postgres://user:password@host:5432/database'
const sslModes = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']

/**
 * Checks a PostgreSQL connection string the way postgres.js will read it, so a mistake is one line naming
 * `name` (`DATABASE_URL` or `--database-url`, as the user gave it) instead of `Invalid URL` later. The
 * message never repeats the string: it may hold a password.
 */
export function checkDatabaseUrl(url: string, name: string): void {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]
  if (scheme === undefined) throw new ConfigError(`${name} must be a PostgreSQL URL such as ${example}`)
  if (!/^postgres(ql)?$/i.test(scheme)) throw new ConfigError(`${name} must be a postgres:// or postgresql:// URL (got ${scheme}://…)`)
  const { hosts, firstHostUrl } = hostList(url)
  for (const host of hosts.split(',')) {
    const port = /:(\d+)$/.exec(host)?.[1]
    if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw new ConfigError(`${name} has port ${port}: a port is between 1 and 65535`)
  }
  let parsed: URL
  try {
    parsed = new URL(firstHostUrl)
  } catch {
    throw new ConfigError(`${name} is not a valid URL (expected ${example}; a reserved character in the password is written %-escaped, e.g. @ as %40)`)
  }
  try {
    for (const part of [hosts, parsed.username, parsed.password, parsed.pathname]) decodeURIComponent(part)
  } catch {
    throw new ConfigError(`${name} has a malformed %-escape in its user, password, host or database (a literal % is written %25)`)
  }
  const sslmode = parsed.searchParams.get('sslmode')
  if (sslmode !== null && !sslModes.includes(sslmode)) throw new ConfigError(`${name} has sslmode=${sslmode}: use one of ${sslModes.join(', ')}`)
}

/**
 * The host list of a connection string as postgres.js reads it (`h1:5432,h2:5433`: after the user info, up
 * to the first / or ?), and the string with its first host alone, which `URL` can parse. The user info ends
 * at the last @, so no part of a password is ever taken for a host.
 */
export function hostList(url: string): { hosts: string; firstHostUrl: string } {
  const authority = url.slice(url.indexOf('://') + 3).split(/[?/]/)[0]!
  const hosts = authority.slice(authority.lastIndexOf('@') + 1)
  return { hosts, firstHostUrl: url.replace(hosts, hosts.split(',')[0]!) }
}
