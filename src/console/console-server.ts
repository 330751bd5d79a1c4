import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Sql } from 'postgres'
import { listCaptures } from '../capture/capture.js'
import { ConfigError, errorMessage } from '../errors.js'
import { outboxDeadEvent, outboxDeadEvents } from '../ops/dead.js'
import type { OutboxTable } from '../outbox/outbox-table.js'
import { parseEventTypePattern } from '../poller/event-type-pattern.js'
import { patternMatches } from '../poller/paused-types.js'
import { parseDuration } from '../duration.js'
import type { Logger } from '../types.js'
import { type ConsoleAction, consoleActions, type FormFields, runConsoleAction } from './console-actions.js'
import { ConsoleAuth } from './console-auth.js'
import type { ResolvedConsoleOptions } from './console-options.js'
import { capturesPage, confirmPage, deadDetailPage, deadPage, layout, loginPage, type PageContext, overviewPage, replicasPage, resultPage, tailPage, typesPage } from './console-pages.js'
import { type Html, html } from './html.js'
import { LiveTail } from './live-tail.js'
import { ConsoleSamples } from './samples.js'

export interface ConsoleSetup {
  /** A pool for the console's queries; the caller closes it after `close()`. */
  sql: Sql
  outbox: OutboxTable
  options: ResolvedConsoleOptions
  log: Logger
}

export interface ConsoleServer {
  /** `http://host:port` */
  readonly url: string
  close(): Promise<void>
}

/** The static files the pages load, shipped in the package's `assets/console/`. */
const assetsDir = new URL('../../assets/console/', import.meta.url)
const assetTypes: Record<string, string> = { 'console.js': 'text/javascript; charset=utf-8', 'console.css': 'text/css; charset=utf-8' }

const securityHeaders = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // not no-referrer: under it a browser sends `Origin: null` with a form's POST, and the same-origin check needs the origin
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
}

const deadListLimit = 100

/** Starts the console: samples the status, serves the pages, runs the actions. */
export async function startConsole(setup: ConsoleSetup): Promise<ConsoleServer> {
  const { sql, outbox, options, log } = setup
  const auth = new ConsoleAuth(options)
  const samples = new ConsoleSamples(sql, outbox, log)
  const tail = new LiveTail(sql, outbox, log)
  await samples.start()
  const assets = new Map<string, Buffer>()
  for (const name of Object.keys(assetTypes)) assets.set(name, await readFile(new URL(name, assetsDir)))
  const outboxName = `${outbox.schema}.${outbox.table}`

  const context = (request: IncomingMessage): PageContext => ({
    outboxName,
    signedIn: auth.signedIn(request),
    actionsEnabled: auth.actionsEnabled,
    status: samples.latest,
    statusError: samples.error,
  })
  const page = (response: ServerResponse, request: IncomingMessage, path: string, title: string, body: Html, status = 200) =>
    send(response, status, 'text/html; charset=utf-8', layout(context(request), path, title, body).text)

  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? '/', 'http://console')
    const path = url.pathname
    if (!auth.hostAllowed(request)) return send(response, 421, 'text/plain; charset=utf-8', 'this console answers only to its own address\n')
    if (request.method === 'GET' && path.startsWith('/assets/')) {
      const name = path.slice('/assets/'.length)
      const body = assets.get(name)
      return body === undefined ? send(response, 404, 'text/plain; charset=utf-8', 'not found\n') : send(response, 200, assetTypes[name]!, body)
    }
    if (path === '/login') return login(request, response)
    if (auth.readNeedsToken && !auth.signedIn(request)) return redirect(response, '/login')
    if (request.method === 'POST' && path.startsWith('/actions/')) return act(request, response, path.slice('/actions/'.length))
    if (request.method !== 'GET') return send(response, 405, 'text/plain; charset=utf-8', 'method not allowed\n')
    const ctx = context(request)
    switch (path) {
      case '/':
        return page(response, request, path, 'Overview', overviewPage(ctx))
      case '/types':
        return page(response, request, path, 'Event types', typesPage(ctx))
      case '/dead': {
        const filter = { type: url.searchParams.get('type')?.trim() ?? '', since: url.searchParams.get('since')?.trim() ?? '' }
        const sinceMs = filter.since === '' ? undefined : parseDuration(filter.since, 'died within')
        if (filter.type !== '') parseEventTypePattern(filter.type, 'type')
        const since = sinceMs === undefined ? undefined : new Date((samples.latest?.at.getTime() ?? Date.now()) - sinceMs)
        const events = await outboxDeadEvents(sql, outbox, { typePattern: filter.type || undefined, since, limit: deadListLimit })
        return page(response, request, path, 'Dead events', deadPage(ctx, filter, events, deadListLimit))
      }
      case '/replicas':
        return page(response, request, path, 'Replicas', replicasPage(ctx))
      case '/captures':
        return page(response, request, path, 'Captured tables', capturesPage(ctx, await listCaptures(sql, outbox)))
      case '/tail':
        return page(response, request, path, 'Live tail', tailPage(ctx, url.searchParams.get('type')?.trim() ?? ''))
      case '/tail/stream':
        return stream(request, response, url.searchParams.get('type')?.trim() || '*')
      case '/api/overview':
        return send(response, 200, 'application/json', JSON.stringify({ status: samples.latest, error: samples.error, points: samples.points }))
    }
    const detail = /^\/dead\/(\d{1,19})$/.exec(path)
    if (detail !== null) {
      const event = await outboxDeadEvent(sql, outbox, detail[1]!, { payload: options.showPayloads })
      return page(response, request, '/dead', `Dead event ${detail[1]}`, deadDetailPage(ctx, event, options.showPayloads), event === undefined ? 404 : 200)
    }
    return page(response, request, path, 'Not found', html`<p>No such page.</p>`, 404)
  }

  const login = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    if (!auth.actionsEnabled) return page(response, request, '/login', 'Sign in', html`<p>This console was started without a token: it is read-only, and there is nothing to sign in to.</p>`)
    if (request.method === 'GET') return page(response, request, '/login', 'Sign in', loginPage(false))
    if (request.method !== 'POST') return send(response, 405, 'text/plain; charset=utf-8', 'method not allowed\n')
    if (!auth.sameOrigin(request)) return refuse(request, response, 'login', 'not sent from this console (Origin check)')
    const token = (await readForm(request)).get('token')?.[0] ?? ''
    if (!auth.tokenMatches(token)) {
      log.warn({ address: request.socket.remoteAddress }, 'console: sign-in with a wrong token')
      return page(response, request, '/login', 'Sign in', loginPage(true), 403)
    }
    log.info({ address: request.socket.remoteAddress }, 'console: signed in')
    response.setHeader('set-cookie', auth.sessionHeader())
    return redirect(response, '/')
  }

  const act = async (request: IncomingMessage, response: ServerResponse, name: string): Promise<void> => {
    if (!(consoleActions as readonly string[]).includes(name)) return send(response, 404, 'text/plain; charset=utf-8', 'no such action\n')
    if (!auth.sameOrigin(request)) return refuse(request, response, name, 'not sent from this console (Origin check)')
    if (!auth.actionsEnabled) return refuse(request, response, name, 'the console was started without a token: it is read-only')
    if (!auth.signedIn(request)) return refuse(request, response, name, 'sign in with the token first')
    const form = await readForm(request)
    const address = request.socket.remoteAddress
    const outcome = await runConsoleAction(sql, outbox, name as ConsoleAction, form, `console ${address}`)
    if (outcome.kind === 'confirm') {
      log.info({ action: name, count: outcome.count, address }, 'console: action awaits confirmation')
      const fields = [...form].flatMap(([key, values]) => (key === 'confirm' ? [] : values.map((value): [string, string] => [key, value])))
      return page(response, request, '', 'Confirm', confirmPage(outcome.description, outcome.count, `/actions/${name}`, fields, outcome.back))
    }
    log.info({ action: name, count: outcome.count, address, ...outcome.detail }, `console: ${outcome.message}`)
    await samples.sample({ types: true })
    return page(response, request, '', 'Done', resultPage(outcome.message, outcome.back))
  }

  const refuse = (request: IncomingMessage, response: ServerResponse, action: string, reason: string) => {
    log.warn({ action, address: request.socket.remoteAddress, reason }, 'console: action refused')
    return page(response, request, '', 'Refused', html`<p class="error" data-refused>Refused: ${reason}.</p>`, 403)
  }

  const stream = (request: IncomingMessage, response: ServerResponse, type: string) => {
    parseEventTypePattern(type, 'type')
    response.writeHead(200, { ...securityHeaders, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' })
    response.write(': live tail\n\n')
    const unsubscribe = tail.subscribe((events) => {
      const shown = events.filter((event) => patternMatches(type, event.event_type))
      if (shown.length > 0) response.write(`data: ${JSON.stringify(shown)}\n\n`)
    })
    const keepAlive = setInterval(() => response.write(': keep-alive\n\n'), 15_000)
    request.on('close', () => {
      clearInterval(keepAlive)
      unsubscribe()
    })
  }

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (response.headersSent) return void response.end()
      if (error instanceof ConfigError) return page(response, request, '', 'Not done', html`<p class="error">${error.message}</p>`, 400)
      log.error({ error: errorMessage(error), path: request.url?.split('?')[0] }, 'console: request failed')
      return page(response, request, '', 'Error', html`<p class="error">${errorMessage(error)}</p>`, 500)
    })
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.port, options.host, () => resolve())
    })
  } catch (error) {
    await samples.stop()
    throw error
  }
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : options.port
  const url = `http://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`
  log.info({ url, actions: auth.actionsEnabled, show_payloads: options.showPayloads }, 'console listening')
  return {
    url,
    async close() {
      tail.stop()
      await samples.stop()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

function send(response: ServerResponse, status: number, type: string, body: string | Buffer): void {
  response.writeHead(status, { ...securityHeaders, 'content-type': type })
  response.end(body)
}

function redirect(response: ServerResponse, location: string): void {
  response.writeHead(303, { ...securityHeaders, location })
  response.end()
}

/** An application/x-www-form-urlencoded body of at most 64 KiB. */
async function readForm(request: IncomingMessage): Promise<FormFields> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > 65_536) throw new ConfigError('form too large')
    chunks.push(chunk)
  }
  const fields: FormFields = new Map()
  for (const [key, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) fields.set(key, [...(fields.get(key) ?? []), value])
  return fields
}
