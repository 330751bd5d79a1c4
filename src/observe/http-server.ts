import { createServer, type Server } from 'node:http'
import { errorMessage } from '../errors.js'
import type { OutboxMetrics } from './metrics.js'

export interface HealthCheck {
  ok: boolean
  /** Why not, for the 503's JSON body. */
  reason?: string
  /** What is wrong without making the replica unhealthy (a lost captured table), in the body either way. */
  warnings?: string[]
}

export interface HttpEndpoints {
  metrics: OutboxMetrics
  /** The loop ran recently and the database answers. */
  health: () => Promise<HealthCheck>
  /** A worker is polling. */
  ready: () => HealthCheck
}

/** Serves /healthz, /readyz and /metrics. Resolves once listening; a port in use is a clear error. */
export async function startHttpServer(host: string, port: number, endpoints: HttpEndpoints): Promise<Server> {
  const server = createServer(async (request, response) => {
    const path = (request.url ?? '/').split('?')[0]
    try {
      if (path === '/metrics') {
        response.writeHead(200, { 'content-type': endpoints.metrics.registry.contentType })
        response.end(await endpoints.metrics.registry.metrics())
        return
      }
      const check = path === '/healthz' ? await endpoints.health() : path === '/readyz' ? endpoints.ready() : undefined
      if (check === undefined) {
        response.writeHead(404, { 'content-type': 'application/json' })
        response.end(JSON.stringify({ error: 'not found: try /healthz, /readyz or /metrics' }))
        return
      }
      response.writeHead(check.ok ? 200 : 503, { 'content-type': 'application/json' })
      const warnings = check.warnings !== undefined && check.warnings.length > 0 ? { warnings: check.warnings } : {}
      response.end(JSON.stringify(check.ok ? { status: 'ok', ...warnings } : { status: 'unavailable', reason: check.reason, ...warnings }))
    } catch (error) {
      response.writeHead(500, { 'content-type': 'application/json' })
      response.end(JSON.stringify({ status: 'error', reason: errorMessage(error) }))
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}
