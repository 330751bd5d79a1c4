import type { Server } from 'node:http'
import { applicationName, connect } from '../database/connect.js'
import { ConfigError, errorMessage } from '../errors.js'
import { outboxTable } from '../outbox/outbox-table.js'
import type { ResolvedOptions } from '../poller/poller-options.js'
import type { Logger } from '../types.js'
import type { ResolvedHttpOptions } from './http-options.js'
import { startHttpServer } from './http-server.js'
import type { OutboxMetrics } from './metrics.js'
import { ReplicaHealth } from './replica-health.js'
import { outboxTenantBacklog } from './tenant-backlog.js'

export interface ServeHttpSetup {
  http: ResolvedHttpOptions
  /** How the listen option is named in a bind error (`--http`, `OUTBOX_POLLER_HTTP`). */
  optionName: string
  /** The outbox and the loop's timings, for the health check. */
  poller: ResolvedOptions
  connectionString: string
  metrics: OutboxMetrics
  /** When the loop last finished a claim (ms since the epoch, 0: not yet). */
  lastLoopAt: () => number
  /** A worker is polling. */
  ready: () => boolean
  log: Logger
}

/** Serves /healthz, /readyz and /metrics when an address is set; returns a function that stops it. */
export async function serveHttp(setup: ServeHttpSetup): Promise<() => Promise<void>> {
  const { listen } = setup.http
  if (listen === undefined) return async () => {}
  const { poller } = setup
  const sql = connect(setup.connectionString, { max: 1, applicationName: applicationName('health') })
  // a batch may take up to the handler timeout, and an idle loop sleeps up to --interval-max between claims
  const { schemas, table, ordering, orderingOnDead } = poller
  const tenants = schemas && ((tenantSql: typeof sql) => outboxTenantBacklog(tenantSql, schemas, table, { ordering, onDead: orderingOnDead }))
  const health = new ReplicaHealth(sql, outboxTable(poller.schema, poller.table), setup.metrics, setup.lastLoopAt, poller.handlerTimeoutMs + poller.intervalMaxMs + 5_000, tenants)
  health.startSampling()
  let server: Server
  try {
    server = await startHttpServer(listen.host, listen.port, {
      metrics: setup.metrics,
      health: () => health.check(),
      ready: () => (setup.ready() ? { ok: true } : { ok: false, reason: 'no worker is polling' }),
    })
  } catch (error) {
    health.stop()
    await sql.end({ timeout: 1 })
    throw new ConfigError(`${setup.optionName} ${listen.host}:${listen.port}: ${errorMessage(error)}`)
  }
  setup.log.info({ http: `${listen.host}:${listen.port}` }, 'serving /healthz, /readyz and /metrics')
  return async () => {
    health.stop()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await sql.end({ timeout: 1 })
  }
}
