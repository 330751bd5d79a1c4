import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { BatchReport } from '../poller/batch-report.js'
import type { LostCapture } from '../capture/capture-registry.js'
import { type TenantBacklog, tenantProblems } from './tenant-backlog.js'

/** The reasons of `outbox_worker_restarts_total`, as the supervisor names them. */
const restartReasons = ['memory', 'crash', 'signal', 'reload'] as const

export interface MetricsOptions {
  /** The replica serves many tenants (`schemas`): the gauges of tenants served and not served. Default false. */
  tenants?: boolean
  /**
   * With `schemas`: a `schema` label on the per-event counters and the backlog gauges, one series per
   * tenant (thousands of tenants make thousands of series). Default false: totals over every tenant.
   */
  perSchema?: boolean
}

/**
 * The Prometheus metrics of one replica. Fed with batch reports (from the worker in the same process, or
 * over IPC from the supervised worker), so they live in the process that serves /metrics and survive
 * worker restarts.
 */
export class OutboxMetrics {
  readonly registry = new Registry()
  readonly #perSchema: boolean
  readonly #eventLabels: string[]
  readonly #backlogLabels: string[]
  readonly #handled: Counter
  readonly #failed: Counter
  readonly #dead: Counter
  readonly #batchSize = new Histogram({ name: 'outbox_batch_size', help: 'Events per non-empty batch.', buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000], registers: [this.registry] })
  readonly #batchSeconds = new Histogram({ name: 'outbox_batch_duration_seconds', help: 'Claim, handlers and settle of a non-empty batch.', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [this.registry] })
  readonly #handlerSeconds = new Histogram({ name: 'outbox_handler_duration_seconds', help: "An event's handlers, by event type.", labelNames: ['event_type'], buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [this.registry] })
  readonly #latency = new Histogram({ name: 'outbox_commit_to_handler_seconds', help: "From the writer's transaction to the first handler's start.", buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60], registers: [this.registry] })
  readonly #pending: Gauge
  readonly #oldest: Gauge
  readonly #deadEvents: Gauge
  readonly #tenants: Gauge | undefined
  readonly #notServed: Gauge | undefined
  readonly #rss = new Gauge({ name: 'outbox_worker_rss_bytes', help: "The worker process's resident set size.", registers: [this.registry] })
  readonly #memoryLimit = new Gauge({ name: 'outbox_worker_memory_limit_bytes', help: 'The RSS above which the worker is replaced (--memory-limit).', registers: [this.registry] })
  readonly #lostCaptures = new Gauge({ name: 'outbox_captured_tables_lost', help: 'Captured tables dropped, re-created or stripped of their triggers, or without their key column (sampled every 10 s).', registers: [this.registry] })
  readonly #lostCapture = new Gauge({ name: 'outbox_captured_table_lost', help: 'One per lost captured table, by table and problem (sampled every 10 s).', labelNames: ['table', 'problem'], registers: [this.registry] })
  readonly #oldestSnapshot = new Gauge({ name: 'outbox_oldest_snapshot_age_seconds', help: 'Age of the oldest transaction or snapshot in the cluster, which holds back VACUUM of the outbox (sampled every 10 s; other roles\' sessions need pg_read_all_stats).', registers: [this.registry] })
  readonly #horizonWarnings = new Gauge({ name: 'outbox_vacuum_horizon_warnings', help: 'Long snapshots, inactive replication slots and old prepared transactions holding back VACUUM of the outbox (sampled every 10 s).', registers: [this.registry] })
  readonly #pausedTypes = new Gauge({ name: 'outbox_paused_event_types', help: 'One per paused event-type pattern: its events wait, pending, until resumed (sampled every 10 s).', labelNames: ['pattern'], registers: [this.registry] })
  readonly #partitionsAhead = new Gauge({ name: 'outbox_partitions_ahead', help: "A partitioned outbox's range partitions after the current period's (-1: none for the current period); absent on a plain outbox (sampled every 10 s).", labelNames: ['partition_by'], registers: [this.registry] })
  readonly #defaultPartitionEvents = new Gauge({ name: 'outbox_default_partition_events', help: "Events in a partitioned outbox's default partition, which found no partition: upkeep is not running (sampled every 10 s; counted up to 100000).", registers: [this.registry] })
  readonly #restarts = new Counter({ name: 'outbox_worker_restarts_total', help: 'Worker restarts, by reason.', labelNames: ['reason'], registers: [this.registry] })

  constructor(options: MetricsOptions = {}) {
    this.#perSchema = options.perSchema ?? false
    const registers = [this.registry]
    this.#eventLabels = this.#perSchema ? ['event_type', 'schema'] : ['event_type']
    this.#backlogLabels = this.#perSchema ? ['schema'] : []
    this.#handled = new Counter({ name: 'outbox_events_handled_total', help: 'Events whose handlers all succeeded (or unmatched events marked processed).', labelNames: this.#eventLabels, registers })
    this.#failed = new Counter({ name: 'outbox_events_failed_total', help: 'Failed attempts (handler threw, rejected or timed out).', labelNames: this.#eventLabels, registers })
    this.#dead = new Counter({ name: 'outbox_events_dead_total', help: 'Events dead-lettered after their last attempt.', labelNames: this.#eventLabels, registers })
    // with --schemas, the totals over every served tenant, or one series per tenant (perSchema)
    this.#pending = new Gauge({ name: 'outbox_pending_events', help: 'Events not yet processed nor dead (sampled every 10 s).', labelNames: this.#backlogLabels, registers })
    this.#oldest = new Gauge({ name: 'outbox_oldest_pending_age_seconds', help: 'Age of the oldest pending event: the lag (sampled every 10 s; with --schemas, the worst tenant\'s).', labelNames: this.#backlogLabels, registers })
    this.#deadEvents = new Gauge({ name: 'outbox_dead_events', help: 'Dead-lettered events in the outbox now (sampled every 10 s).', labelNames: this.#backlogLabels, registers })
    if (options.tenants) {
      this.#tenants = new Gauge({ name: 'outbox_tenants', help: 'Tenant outboxes served (--schemas; sampled every 10 s).', registers })
      this.#notServed = new Gauge({ name: 'outbox_tenants_not_served', help: 'Matching schemas not served, by problem: no outbox (or not migrated), ordering differs, ordering indexes missing (--schemas; sampled every 10 s).', labelNames: this.#perSchema ? ['problem', 'schema'] : ['problem'], registers })
    }
    collectDefaultMetrics({ register: this.registry, prefix: 'outbox_poller_' })
    // every reason from the start: a rate or an increase sees the first restart, and a query finds the series
    for (const reason of restartReasons) this.#restarts.inc({ reason }, 0)
  }

  recordBatch(report: BatchReport): void {
    if (report.claimed === 0) return
    this.#batchSize.observe(report.claimed)
    this.#batchSeconds.observe(report.durationMs / 1000)
    for (const latency of report.latencyMs) this.#latency.observe(latency / 1000)
    for (const [type, counts] of Object.entries(report.types)) {
      const labels = this.#eventLabelsOf(type, report.schema)
      if (counts.handled > 0) this.#handled.inc(labels, counts.handled)
      if (counts.failed > 0) this.#failed.inc(labels, counts.failed)
      if (counts.dead > 0) this.#dead.inc(labels, counts.dead)
      for (const ms of counts.handlerMs) this.#handlerSeconds.observe({ event_type: type }, ms / 1000)
    }
  }

  /** Dead-lettered outside a batch (a crash charged by the supervisor); `schema`: the tenant's, with --schemas. */
  recordDead(eventType: string, count: number, schema?: string): void {
    this.#dead.inc(this.#eventLabelsOf(eventType, schema), count)
  }

  #eventLabelsOf(eventType: string, schema: string | undefined): Record<string, string> {
    return this.#perSchema ? { event_type: eventType, schema: schema ?? '' } : { event_type: eventType }
  }

  /** A worker restart, by the supervisor's reason (`memory`, `crash`, `signal`, `reload`). */
  recordRestart(reason: string): void {
    this.#restarts.inc({ reason })
  }

  setWorkerRss(bytes: number): void {
    this.#rss.set(bytes)
  }

  setWorkerMemoryLimit(bytes: number): void {
    this.#memoryLimit.set(bytes)
  }

  setLostCaptures(lost: readonly LostCapture[]): void {
    this.#lostCaptures.set(lost.length)
    this.#lostCapture.reset()
    for (const capture of lost) this.#lostCapture.set({ table: capture.table, problem: capture.problem }, 1)
  }

  setVacuumHorizon(oldestSnapshotSeconds: number, warnings: number): void {
    this.#oldestSnapshot.set(oldestSnapshotSeconds)
    this.#horizonWarnings.set(warnings)
  }

  /** The paused patterns: a stall alert can tell a pause from a failure. */
  setPausedTypes(patterns: readonly string[]): void {
    this.#pausedTypes.reset()
    for (const pattern of patterns) this.#pausedTypes.set({ pattern }, 1)
  }

  /** A partitioned outbox's partitions ahead and default-partition events; `partitionBy` null: a plain outbox, no series. */
  setLayout(partitionBy: string | null, ahead: number, defaultRows: number): void {
    this.#partitionsAhead.reset()
    if (partitionBy !== null) this.#partitionsAhead.set({ partition_by: partitionBy }, ahead)
    this.#defaultPartitionEvents.set(defaultRows)
  }

  /**
   * With `schemas`: the served tenants' layouts, as one outbox's gauges would show the worst of them: per width,
   * the fewest partitions ahead of any tenant; the default-partition events of all tenants summed. No
   * `schema` label, even with `metricsPerSchema` (`status --schemas` names the tenants).
   */
  setTenantLayouts(layouts: ReadonlyArray<{ partitionBy: string | null; ahead: number; defaultRows: number }>): void {
    const fewest = new Map<string, number>()
    let defaultRows = 0
    for (const layout of layouts) {
      if (layout.partitionBy === null) continue
      fewest.set(layout.partitionBy, Math.min(fewest.get(layout.partitionBy) ?? Number.POSITIVE_INFINITY, layout.ahead))
      defaultRows += layout.defaultRows
    }
    this.#partitionsAhead.reset()
    for (const [partitionBy, ahead] of fewest) this.#partitionsAhead.set({ partition_by: partitionBy }, ahead)
    this.#defaultPartitionEvents.set(defaultRows)
  }

  setBacklog(pending: number, oldestAgeSeconds: number, dead: number): void {
    this.#pending.set(pending)
    this.#oldest.set(oldestAgeSeconds)
    this.#deadEvents.set(dead)
  }

  /** With --schemas: the backlog of every served tenant (totals, or per schema), and the schemas not served. */
  setTenantBacklog(backlog: TenantBacklog): void {
    const { tenants, notServed } = backlog
    this.#tenants?.set(tenants.length)
    this.#notServed?.reset()
    if (this.#perSchema) {
      // dropped tenants' series go away
      for (const gauge of [this.#pending, this.#oldest, this.#deadEvents]) gauge.reset()
      for (const tenant of tenants) {
        const labels = { schema: tenant.schema }
        this.#pending.set(labels, tenant.pending)
        this.#oldest.set(labels, tenant.lagSeconds)
        this.#deadEvents.set(labels, tenant.dead)
      }
      for (const { schema, problem } of notServed) this.#notServed?.set({ problem, schema }, 1)
      return
    }
    let pending = 0
    let lag = 0
    let dead = 0
    for (const tenant of tenants) {
      pending += tenant.pending
      lag = Math.max(lag, tenant.lagSeconds)
      dead += tenant.dead
    }
    this.setBacklog(pending, lag, dead)
    // every problem from the start, so an alert on a count above 0 finds its series
    for (const problem of tenantProblems) this.#notServed?.set({ problem }, notServed.filter((schema) => schema.problem === problem).length)
  }
}
