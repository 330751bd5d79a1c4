import { ConfigError } from '../errors.js'
import { type OptionNamer, rejectUnknownOptions } from '../poller/poller-options.js'

/** Options of the HTTP server (/healthz, /readyz, /metrics). */
export interface HttpOptions {
  /** `host:port`, `:port` or a bare port (both on 127.0.0.1), `[::1]:port`; `''` or `off`: no server. Default: off. */
  http?: string
  /**
   * With `schemas`: a `schema` label on the per-event counters and the backlog gauges of /metrics, one series
   * per tenant. Default false: totals over every tenant (thousands of tenants would make thousands of series).
   */
  metricsPerSchema?: boolean
}

export interface ResolvedHttpOptions {
  /** Where to listen; undefined: no HTTP server. */
  readonly listen: { readonly host: string; readonly port: number } | undefined
  readonly metricsPerSchema: boolean
}

const httpOptionKeys = { http: true, metricsPerSchema: true } as const satisfies Record<keyof HttpOptions, true>

/** Validates and freezes; an error names the option and the value. */
export function resolveHttpOptions(input: HttpOptions, nameOf: OptionNamer<keyof HttpOptions> = (key) => key): ResolvedHttpOptions {
  rejectUnknownOptions(input, httpOptionKeys, 'HTTP')
  const metricsPerSchema = input.metricsPerSchema ?? false
  if (typeof metricsPerSchema !== 'boolean') throw new ConfigError(`${nameOf('metricsPerSchema')} must be true or false (got ${JSON.stringify(metricsPerSchema)})`)
  return Object.freeze({ listen: listenAddress(input.http, nameOf('http')), metricsPerSchema })
}

function listenAddress(value: string | undefined, name: string): { host: string; port: number } | undefined {
  if (value === undefined || value === '' || value === 'off') return undefined
  const match = /^(?:(\[[0-9a-fA-F:]+\]|[\w.-]+)?:)?(\d+)$/.exec(value.trim())
  const port = match ? Number(match[2]) : Number.NaN
  if (!match || port < 1 || port > 65535) throw new ConfigError(`${name} must be host:port or a port between 1 and 65535 (got ${JSON.stringify(value)})`)
  return Object.freeze({ host: (match[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port })
}
