/**
 * Which tenant's outbox is claimed next: a fair rotation over the outboxes that have work. An outbox with
 * work takes one batch per turn and goes to the back of the line, so a tenant with a long backlog gets one
 * batch in every round and cannot starve the others. An outbox known to be empty is idle: it costs nothing
 * until it is woken (its NOTIFY) or its safety poll falls due. A tenant is claimed by one slot at a time.
 * Pure bookkeeping, no I/O: the caller passes the time.
 */
export class TenantRotation<T> {
  /** Tenants with work, in turn order (a Set keeps insertion order). */
  readonly #ready = new Set<T>()
  /** Known empty (or backing off): when each is due for a look anyway. */
  readonly #idleUntil = new Map<T, number>()
  /** Claimed by a slot now; `true` when woken meanwhile. */
  readonly #busy = new Map<T, boolean>()

  get size(): number {
    return this.#ready.size + this.#idleUntil.size + this.#busy.size
  }

  has(tenant: T): boolean {
    return this.#ready.has(tenant) || this.#idleUntil.has(tenant) || this.#busy.has(tenant)
  }

  /** A new tenant: it gets a turn at once (it may hold a backlog). */
  add(tenant: T): void {
    if (!this.has(tenant)) this.#ready.add(tenant)
  }

  /** Forgets a tenant; one busy now is forgotten when its batch is done. */
  remove(tenant: T): void {
    this.#ready.delete(tenant)
    this.#idleUntil.delete(tenant)
    this.#busy.delete(tenant)
  }

  /** The next tenant to claim, now busy; idle tenants whose safety poll is due join the line first. */
  next(now: number): T | undefined {
    for (const [tenant, until] of this.#idleUntil) {
      if (until > now) continue
      this.#idleUntil.delete(tenant)
      this.#ready.add(tenant)
    }
    for (const tenant of this.#ready) {
      this.#ready.delete(tenant)
      this.#busy.set(tenant, false)
      return tenant
    }
    return undefined
  }

  /** Up to `most` tenants to claim together (see next), in turn order. */
  take(now: number, most: number): T[] {
    const taken: T[] = []
    for (let tenant = this.next(now); tenant !== undefined; tenant = taken.length < most ? this.next(now) : undefined) taken.push(tenant)
    return taken
  }

  /**
   * The tenant's batch is done: `again` puts it at the back of the line, otherwise it idles until
   * `idleUntil` (unless it was woken while busy). A tenant removed meanwhile stays gone.
   */
  done(tenant: T, next: { again: true } | { idleUntil: number }): void {
    const woken = this.#busy.get(tenant)
    if (woken === undefined) return
    this.#busy.delete(tenant)
    if ('again' in next || woken) this.#ready.add(tenant)
    else this.#idleUntil.set(tenant, next.idleUntil)
  }

  /** Work arrived for the tenant (its NOTIFY): an idle tenant joins the line; a busy one goes again after its batch. */
  wake(tenant: T): boolean {
    if (this.#idleUntil.delete(tenant)) {
      this.#ready.add(tenant)
      return true
    }
    if (this.#busy.has(tenant)) this.#busy.set(tenant, true)
    return false
  }

  /** Whether some tenant may be claimed now. */
  hasReady(): boolean {
    return this.#ready.size > 0
  }

  /** The idle tenants that wait only to be woken (idle until Infinity): those the safety poll looks at. */
  waiting(): T[] {
    const waiting: T[] = []
    for (const [tenant, until] of this.#idleUntil) if (until === Number.POSITIVE_INFINITY) waiting.push(tenant)
    return waiting
  }

  /** When the earliest idle tenant falls due; Infinity when none idles. */
  nextDueAt(): number {
    let due = Number.POSITIVE_INFINITY
    for (const until of this.#idleUntil.values()) if (until < due) due = until
    return due
  }
}
