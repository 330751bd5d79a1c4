import { randomUUID } from 'node:crypto'
import type { Sql } from 'postgres'

/** How long start-up waits for its own NOTIFY to come back before deciding that LISTEN does not work. */
const listenCheckMs = 2_000

/**
 * The one LISTEN connection of a multi-tenant poller: one LISTEN per tenant's channel on it, so the
 * connections do not grow with the tenants, and writers keep the capture trigger's NOTIFY on their own
 * outbox's channel. Two schemas whose channel names truncate to the same 63 bytes share a channel: a
 * notification then wakes both, which costs one empty claim.
 */
export class TenantListener {
  readonly #channels = new Map<string, { schemas: Set<string>; unlisten: Promise<() => Promise<void>> }>()
  readonly #onNotify: (schema: string, payload: string) => void
  #listener: Sql | undefined

  constructor(onNotify: (schema: string, payload: string) => void) {
    this.#onNotify = onNotify
  }

  get listening(): boolean {
    return this.#listener !== undefined
  }

  /**
   * Checks that a NOTIFY sent through `sql` reaches `listener` (postgres.js keeps one LISTEN connection per
   * pool and re-listens after a reconnect). Behind a pooler in transaction mode nothing arrives: false, and
   * the poller polls every outbox at most `--interval-max` apart instead.
   */
  async start(listener: Sql, sql: Sql): Promise<boolean> {
    const channel = `outbox_poller.check.${randomUUID()}`
    let arrived: () => void = () => {}
    const checked = new Promise<boolean>((resolve) => {
      arrived = () => resolve(true)
      setTimeout(() => resolve(false), listenCheckMs).unref()
    })
    const { unlisten } = await listener.listen(channel, () => arrived())
    await sql`select pg_notify(${channel}, 'check')`
    const works = await checked
    await unlisten().catch(() => {})
    if (works) this.#listener = listener
    return works
  }

  /** Listens on the tenant's channel (no-op when not listening). */
  async add(schema: string, channel: string): Promise<void> {
    if (this.#listener === undefined) return
    const known = this.#channels.get(channel)
    if (known !== undefined) {
      known.schemas.add(schema)
      return
    }
    const schemas = new Set([schema])
    const unlisten = this.#listener.listen(channel, (payload) => {
      for (const each of schemas) this.#onNotify(each, payload)
    }).then((listening) => listening.unlisten)
    this.#channels.set(channel, { schemas, unlisten })
    await unlisten
  }

  /** Stops listening for the tenant (its channel's UNLISTEN when no other tenant shares it). */
  async remove(schema: string, channel: string): Promise<void> {
    const known = this.#channels.get(channel)
    if (known === undefined || !known.schemas.delete(schema) || known.schemas.size > 0) return
    this.#channels.delete(channel)
    await (await known.unlisten.catch(() => undefined))?.().catch(() => {})
  }

  async close(): Promise<void> {
    const channels = [...this.#channels.values()]
    this.#channels.clear()
    this.#listener = undefined
    await Promise.all(channels.map(async (known) => (await known.unlisten.catch(() => undefined))?.().catch(() => {})))
  }
}
