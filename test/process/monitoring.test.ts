import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { afterAll, describe, expect, it } from 'vitest'
import { migrate } from '../../src/outbox/migrate.js'
import { fixturePath } from '../support/cli.js'
import { processSuite } from '../support/process-suite.js'
import { waitFor } from '../support/wait-for.js'

// The shipped rules and dashboard, checked by the tools that will run them: promtool, and a real Prometheus
// (Debian's `prometheus` package has both; .ci/run installs it) scraping a running replica.
const monitoringDir = fileURLToPath(new URL('../../monitoring/', import.meta.url))
const rulesFile = join(monitoringDir, 'prometheus-rules.yml')
const rulesText = await readFile(rulesFile, 'utf8')
const dashboard = JSON.parse(await readFile(join(monitoringDir, 'grafana-dashboard.json'), 'utf8')) as Dashboard
const hasPromtool = spawnSync('promtool', ['--version']).status === 0
const hasPrometheus = spawnSync('prometheus', ['--version']).status === 0

interface Dashboard {
  templating: { list: Array<{ name: string }> }
  panels: Array<{ id: number; type: string; title: string; datasource: { uid: string }; gridPos: { x: number; w: number }; targets: Array<{ expr: string; datasource: { uid: string } }> }>
}

const panelExpressions = dashboard.panels.flatMap((panel) => panel.targets.map((target) => ({ panel: panel.title, expr: target.expr })))
/** A panel's expression as Grafana sends it: every job, a rate window several scrapes wide. */
const asGrafanaSends = (expr: string) => expr.replaceAll('$job', '.+').replaceAll('$__rate_interval', '15s')
const ruleExpressions = [...rulesText.matchAll(/expr: (?:\|\n((?:\s{10}.*\n)+)|(.*)\n)/g)].map((match) => (match[1] ?? match[2])!.trim())
/** The outbox metric names an expression reads; a histogram's series end in _bucket, _count or _sum. */
const metricNames = (expr: string) => [...expr.matchAll(/\boutbox_[a-z_]+/g)].map((match) => match[0].replace(/_(bucket|count|sum)$/, ''))

/** The metrics only a replica on a partitioned outbox has a series of (a plain one's default-partition count is 0). */
const partitionedOnly = new Set(['outbox_partitions_ahead'])

// `parted`: a second outbox, partitioned by day, for a replica whose partition gauges the rules and a panel read
const s = processSuite('monitoring', { setup: (db) => migrate({ sql: db.sql, table: 'parted', partitionBy: 'day' }).then(() => {}) })

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
}

/** A replica with events handled, failing and dead-lettering all along (entity 3's events always fail). */
async function busyReplica(): Promise<{ port: number; stopWriting: () => Promise<void> }> {
  const port = await freePort()
  s.start(['--handlers', fixturePath('record-handler.js'), '--http', String(port), '--interval-min', '50ms', '--interval-max', '200ms', '--max-attempts', '2', '--retry-delay', '100ms', '--memory-check-interval', '500ms'], {
    RECORD_FILE: '/dev/null',
    FAIL_ENTITY_ID: '3',
  })
  await waitFor('the replica polling', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 30_000, 100)
  let writing = true
  let next = 10
  const writer = (async () => {
    await s.db.sql`insert into items values (3, 'always failing')`
    while (writing) {
      await s.db.sql`insert into items values (${next++}, 'fine')`
      await s.db.sql`update items set name = ${`failing ${next}`} where id = 3`
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  return {
    port,
    stopWriting: async () => {
      writing = false
      await writer
    },
  }
}

/** A replica on the partitioned outbox `parted`, with nothing to handle: its partition gauges are sampled at start. */
async function partitionedReplica(): Promise<{ port: number }> {
  const port = await freePort()
  s.start(['--table', 'parted', '--handlers', fixturePath('record-handler.js'), '--http', String(port), '--interval-min', '50ms', '--interval-max', '200ms'], { RECORD_FILE: '/dev/null' })
  await waitFor('the partitioned replica polling', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 30_000, 100)
  return { port }
}

async function scrapedFamilies(port: number): Promise<Set<string>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  return new Set((parsePrometheusTextFormat(text) as Array<{ name: string }>).map((family) => family.name))
}

describe('monitoring: the Prometheus rules and the Grafana dashboard', () => {
  it.skipIf(!hasPromtool)('promtool check rules accepts the rules (skipped where Debian\'s prometheus package cannot be installed)', () => {
    const result = spawnSync('promtool', ['check', 'rules', rulesFile], { encoding: 'utf8' })
    expect(result.status, result.stdout + result.stderr).toBe(0)
    expect(result.stdout).toMatch(/SUCCESS: 15 rules found/)
  })

  it.skipIf(!hasPromtool)('promtool test rules: every rule fires on its synthetic series and stays quiet on the others', () => {
    const result = spawnSync('promtool', ['test', 'rules', join(monitoringDir, 'prometheus-rules.test.yml')], { encoding: 'utf8' })
    expect(result.status, result.stdout + result.stderr).toBe(0)
    expect(result.stdout).toMatch(/SUCCESS/)
    // every alert of the rules file is exercised by the tests
    const tests = readFileSync(join(monitoringDir, 'prometheus-rules.test.yml'), 'utf8')
    for (const [, alert] of rulesText.matchAll(/- alert: (\w+)/g)) expect(tests, alert).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`))
  })

  it('the dashboard uses built-in panels only, one data source variable, and panels that fit the grid', () => {
    expect(dashboard.templating.list.map((variable) => variable.name)).toEqual(['datasource', 'job'])
    expect(new Set(dashboard.panels.map((panel) => panel.id)).size).toBe(dashboard.panels.length)
    for (const panel of dashboard.panels) {
      expect(['timeseries', 'stat'], panel.title).toContain(panel.type)
      expect(panel.datasource.uid, panel.title).toBe('${datasource}')
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24)
      expect(panel.targets.length, panel.title).toBeGreaterThan(0)
    }
    const titles = dashboard.panels.map((panel) => panel.title)
    for (const expected of ['Throughput', 'Pending and lag', 'Commit-to-handler latency', 'Failed attempts by event type', 'Dead-lettered by event type', 'Worker RSS against the limit', 'Worker restarts by reason', 'Throughput per replica', 'Partition upkeep']) expect(titles).toContain(expected)
  })

  it('every metric the dashboard and the rules name is one a replica exports: the partition gauges, one on a partitioned outbox', async () => {
    const parted = await partitionedReplica()
    const replica = await busyReplica()
    try {
      // the labelled counters appear once something was handled, failed and dead-lettered
      await waitFor('events handled, failed and dead in the metrics', async () => {
        const families = await scrapedFamilies(replica.port)
        return ['outbox_events_handled_total', 'outbox_events_failed_total', 'outbox_events_dead_total'].every((name) => families.has(name))
      }, 30_000, 200)
      const exported = await scrapedFamilies(replica.port)
      const named = new Set([...panelExpressions.map(({ expr }) => expr), ...ruleExpressions].flatMap(metricNames))
      expect(ruleExpressions).toHaveLength(15)
      expect(named.size).toBeGreaterThan(10)
      for (const name of named) if (!partitionedOnly.has(name)) expect(exported, name).toContain(name)
      // its family is declared, with no series: a plain outbox has no partitions
      expect(await (await fetch(`http://127.0.0.1:${replica.port}/metrics`)).text()).not.toMatch(/\noutbox_partitions_ahead\{/)
      // the partitioned replica: every partition metric named, with the layout migrate left (2 days ahead, none in the default partition)
      const partitionNames = [...named].filter((name) => /^outbox_(partitions|default_partition)_/.test(name))
      expect(partitionNames.sort()).toEqual(['outbox_default_partition_events', 'outbox_partitions_ahead'])
      const text = await waitFor('the partition gauges sampled', async () => {
        const body = await (await fetch(`http://127.0.0.1:${parted.port}/metrics`)).text()
        return /\noutbox_partitions_ahead\{/.test(body) ? body : undefined
      }, 30_000, 200)
      const families = new Set((parsePrometheusTextFormat(text) as Array<{ name: string }>).map((family) => family.name))
      for (const name of partitionNames) expect(families, name).toContain(name)
      expect(text).toMatch(/\noutbox_partitions_ahead\{partition_by="day"\} 2\n/)
      expect(text).toMatch(/\noutbox_default_partition_events 0\n/)
    } finally {
      await replica.stopWriting()
    }
  })

  describe.skipIf(!hasPrometheus)('a real Prometheus scraping a replica (skipped where Debian\'s prometheus package cannot be installed)', () => {
    let prometheus: ChildProcess | undefined
    let directory: string | undefined
    afterAll(async () => {
      if (prometheus !== undefined && prometheus.exitCode === null) {
        prometheus.kill('SIGTERM')
        await new Promise((resolve) => prometheus!.once('exit', resolve))
      }
      if (directory !== undefined) await rm(directory, { recursive: true, force: true })
    })

    it('loads the rules, evaluates them without error, and every panel expression returns data', async () => {
      const parted = await partitionedReplica()
      const replica = await busyReplica()
      try {
        directory = await mkdtemp(join(tmpdir(), 'outbox-prometheus-'))
        const webPort = await freePort()
        await writeFile(
          join(directory, 'prometheus.yml'),
          [
            'global: { scrape_interval: 1s, evaluation_interval: 1s }',
            `rule_files: [${JSON.stringify(rulesFile)}]`,
            'scrape_configs:',
            `  - { job_name: outbox-poller, static_configs: [{ targets: ['127.0.0.1:${replica.port}'] }] }`,
            `  - { job_name: outbox-poller-partitioned, static_configs: [{ targets: ['127.0.0.1:${parted.port}'] }] }`,
          ].join('\n'),
        )
        let output = ''
        prometheus = spawn('prometheus', [`--config.file=${join(directory, 'prometheus.yml')}`, `--storage.tsdb.path=${join(directory, 'data')}`, `--web.listen-address=127.0.0.1:${webPort}`], { stdio: ['ignore', 'pipe', 'pipe'] })
        prometheus.stdout!.on('data', (chunk) => (output += chunk))
        prometheus.stderr!.on('data', (chunk) => (output += chunk))
        const api = async (path: string) => {
          const response = await fetch(`http://127.0.0.1:${webPort}/api/v1/${path}`)
          const body = (await response.json()) as { status: string; data: any; error?: string }
          if (body.status !== 'success') throw new Error(`${path}: ${body.error}`)
          return body.data
        }
        await waitFor(`prometheus up (${output.slice(-300)})`, async () => (await fetch(`http://127.0.0.1:${webPort}/-/ready`).catch(() => undefined))?.status === 200, 30_000, 200)
        await waitFor('both replicas scraped', async () => (await api('targets')).activeTargets.filter((target: { health: string }) => target.health === 'up').length === 2, 30_000, 200)
        const startedAt = Date.now() / 1000

        // every rule evaluated, and none in error (a typo in a metric name is no error: that is the test above)
        const rules = await waitFor('every rule evaluated', async () => {
          const groups = (await api('rules')).groups as Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }>
          const all = groups.flatMap((group) => group.rules)
          return all.length === 15 && all.every((rule) => rule.health !== 'unknown') ? all : undefined
        }, 30_000, 250)
        for (const rule of rules) expect(rule.health, `${rule.name}: ${rule.lastError}`).toBe('ok')

        // each panel's expression, as Grafana sends it, over the time since the first scrape
        for (const { panel, expr } of panelExpressions) {
          const query = asGrafanaSends(expr)
          await waitFor(`data for "${panel}": ${query}`, async () => {
            const params = new URLSearchParams({ query, start: String(startedAt), end: String(Date.now() / 1000), step: '1' })
            const series = (await api(`query_range?${params}`)).result as Array<{ values: Array<[number, string]> }>
            return series.some((one) => one.values.some(([, value]) => Number.isFinite(Number(value))))
          }, 45_000, 500)
        }
      } finally {
        await replica.stopWriting()
      }
    }, 180_000)
  })
})
