import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { defaults } from '../../src/poller/poller-options.js'
import { supervisorDefaults } from '../../src/supervisor/supervisor-options.js'
import { binPath } from '../support/cli.js'

const srcDir = fileURLToPath(new URL('../../src/', import.meta.url))
const unitDir = fileURLToPath(new URL('../../systemd/', import.meta.url))
const unitFiles = readdirSync(unitDir).filter((name) => /\.(service|target|timer)$/.test(name)).sort()
const services = unitFiles.filter((name) => name.endsWith('.service'))
const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0

/** A unit file's settings as `Section.Key` → every value assigned, in order (comments and blank lines dropped). */
function readUnit(name: string): Map<string, string[]> {
  const settings = new Map<string, string[]>()
  let section = ''
  for (const raw of readFileSync(join(unitDir, name), 'utf8').split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header) {
      section = header[1]!
      continue
    }
    const eq = line.indexOf('=')
    const key = `${section}.${line.slice(0, eq).trim()}`
    settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return settings
}

/** The last value of a setting, as systemd reads a single-valued setting assigned twice. */
function setting(unit: Map<string, string[]>, key: string): string | undefined {
  return unit.get(key)?.at(-1)
}

/** Seconds of a systemd time span as these units write it: `70`, `70s`, `10min`. */
function seconds(span: string): number {
  const match = /^(\d+)\s*(s|sec|min)?$/.exec(span)
  if (!match) throw new Error(`unexpected time span ${JSON.stringify(span)}`)
  return Number(match[1]) * (match[2] === 'min' ? 60 : 1)
}

describe('systemd units', () => {
  it('ships the replica template, its target, the migration and the daily cleanup', () => {
    expect(unitFiles).toEqual([
      'outbox-poller-cleanup.service',
      'outbox-poller-cleanup.timer',
      'outbox-poller-migrate.service',
      'outbox-poller.target',
      'outbox-poller@.service',
    ])
  })

  // systemd-analyze is part of systemd; where it is not installed (macOS, some containers) there is nothing
  // to run the check with, and the invariants below still hold the units to their contract.
  it.skipIf(!hasSystemdAnalyze)('systemd-analyze verify accepts every unit (skipped where systemd-analyze is not installed)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-poller-systemd-'))
    try {
      // verify checks that ExecStart= names an executable: point the units at this checkout's CLI instead of
      // the installed /usr/local/bin/outbox-poller.
      for (const name of unitFiles) {
        const text = readFileSync(join(unitDir, name), 'utf8').replaceAll('/usr/local/bin/outbox-poller', `"${binPath}"`)
        writeFileSync(join(dir, name), text)
      }
      // The template is verified as an instance too, as `systemctl enable outbox-poller@1` loads it.
      const paths = [...unitFiles, 'outbox-poller@1.service'].map((name) => join(dir, name))
      const result = spawnSync('systemd-analyze', ['verify', ...paths], { encoding: 'utf8' })
      // verify also loads the units ours refer to (network-online.target, multi-user.target, …) and may warn
      // about the host's own units; only lines about ours count. User=outbox-poller need not exist on this
      // machine: verify does not resolve User= or Group= (checked with systemd 252), so it says nothing.
      const ours = result.stderr.split('\n').filter((line) => line.includes('outbox-poller') || line.includes(dir))
      expect(ours).toEqual([])
      expect(result.status, result.stderr).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a replica drains on SIGTERM within its stop timeout and is not restarted on a configuration error', () => {
    const replica = readUnit('outbox-poller@.service')
    // SIGTERM to the supervisor only: it drains its worker; systemd's SIGKILL comes after the timeout.
    expect(setting(replica, 'Service.KillMode')).toBe('mixed')
    expect(setting(replica, 'Service.KillSignal')).toBe('SIGTERM')
    // The stop timeout must exceed the default drain timeout (handler timeout + margin = 40 s), or systemd
    // kills a worker that is still finishing its batch.
    const drainSeconds = (defaults.handlerTimeoutMs + defaults.drainMarginMs) / 1000
    expect(drainSeconds).toBe(40)
    expect(seconds(setting(replica, 'Service.TimeoutStopSec')!)).toBeGreaterThan(drainSeconds)
    // Exit 1 is restarted, exit 2 (configuration error) is not.
    expect(setting(replica, 'Service.Restart')).toBe('on-failure')
    expect(setting(replica, 'Service.RestartPreventExitStatus')!.split(/\s+/)).toContain('2')
    expect(setting(replica, 'Service.ExecReload')).toBe('/bin/kill -HUP $MAINPID')
    expect(setting(replica, 'Service.ExecStart')).toBe('/usr/local/bin/outbox-poller run')
    expect(replica.get('Service.EnvironmentFile')).toEqual(['/etc/outbox-poller/outbox-poller.env', '-/etc/outbox-poller/%i.env'])
    // Ordered after the migration, but only wanting it: a failed migration does not block the replicas.
    expect(replica.get('Unit.Wants')).toContain('outbox-poller-migrate.service')
    expect(replica.get('Unit.After')).toContain('outbox-poller-migrate.service')
    expect(replica.get('Unit.Requires')).toBeUndefined()
    expect(setting(replica, 'Install.WantedBy')).toBe('outbox-poller.target')
  })

  it('a replica is Type=notify with a watchdog that kills a hung replica outright, and a start timeout above the connect timeout', () => {
    const replica = readUnit('outbox-poller@.service')
    expect(setting(replica, 'Service.Type')).toBe('notify')
    // the supervisor notifies through systemd-notify, a child process: NotifyAccess=main would reject it
    expect(setting(replica, 'Service.NotifyAccess')).toBe('all')
    expect(seconds(setting(replica, 'Service.WatchdogSec')!)).toBeGreaterThanOrEqual(10)
    // a hung worker cannot drain: a graceful signal would only wait
    expect(setting(replica, 'Service.WatchdogSignal')).toBe('SIGKILL')
    // READY=1 comes once the worker polls, which may take the whole connect timeout
    expect(seconds(setting(replica, 'Service.TimeoutStartSec')!)).toBeGreaterThan(defaults.connectTimeoutMs / 1000)
  })

  it('every service runs as the unprivileged user with the same hardening, and none forbids the JIT', () => {
    const hardening = (unit: Map<string, string[]>) =>
      Object.fromEntries([...unit].filter(([key]) => key.startsWith('Service.') && /^Service\.(NoNewPrivileges|Protect|Private|Restrict|LockPersonality|SystemCall|Capability|UMask|User|Group)/.test(key)))
    const replica = hardening(readUnit('outbox-poller@.service'))
    expect(replica).toMatchObject({
      'Service.User': ['outbox-poller'],
      'Service.Group': ['outbox-poller'],
      'Service.NoNewPrivileges': ['yes'],
      'Service.ProtectSystem': ['strict'],
      'Service.CapabilityBoundingSet': [''],
      'Service.UMask': ['0077'],
    })
    for (const name of services) {
      const unit = readUnit(name)
      expect(hardening(unit), name).toEqual(replica)
      // Node's JIT needs memory that is writable and executable.
      expect(unit.has('Service.MemoryDenyWriteExecute'), name).toBe(false)
      expect(unit.get('Service.EnvironmentFile')?.[0], name).toBe('/etc/outbox-poller/outbox-poller.env')
    }
    expect(setting(readUnit('outbox-poller-migrate.service'), 'Service.ExecStart')).toBe('/usr/local/bin/outbox-poller migrate')
  })

  it('the example environment file names every variable the program reads, with its default', () => {
    const example = readFileSync(join(unitDir, 'outbox-poller.env.example'), 'utf8')
    const assigned = new Map([...example.matchAll(/^#?([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((match) => [match[1]!, match[2]!]))
    // Every source file under src/, at any depth: the options' variables as the CLI declares them
    // (`env: 'X'` or `.env('X')`) and every direct read (`process.env.X`, `process.env['X']`).
    const sources = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.ts')).map((name) => readFileSync(join(srcDir, name), 'utf8')).join('\n')
    const declared = [...sources.matchAll(/(?:env: |\.env\()'([A-Z][A-Z0-9_]*)'|process\.env(?:\.|\[')([A-Za-z][A-Za-z0-9_]*)/g)].map((match) => (match[1] ?? match[2])!)
    // set by the program for its own children, or by npm: not for the operator
    const internal = new Set(['OUTBOX_DEMO_DIR', 'npm_package_version'])
    expect(declared).toContain('DATABASE_URL')
    expect(declared).toContain('OUTBOX_POLLER_DEBUG')
    for (const name of [...declared, 'OUTBOX_POLLER_SUPERVISE', 'OUTBOX_POLLER_HTTP'].filter((name) => !internal.has(name))) expect(assigned.has(name), name).toBe(true)
    expect(assigned.get('OUTBOX_POLLER_BATCH_SIZE')).toBe(String(defaults.batchSize))
    expect(assigned.get('OUTBOX_POLLER_CONCURRENCY')).toBe(String(defaults.concurrency))
    expect(assigned.get('OUTBOX_POLLER_MAX_ATTEMPTS')).toBe(String(defaults.maxAttempts))
    expect(assigned.get('OUTBOX_POLLER_MEMORY_LIMIT_MB')).toBe(String(supervisorDefaults.memoryLimitMb))
    expect(assigned.get('OUTBOX_POLLER_CRASH_LIMIT')).toBe(String(supervisorDefaults.crashLimit))
  })
})
