import { spawn } from 'node:child_process'
import type { Logger } from '../types.js'

/** What systemd puts in a service's environment (sd_notify(3), sd_watchdog_enabled(3)). */
export interface SystemdEnvironment {
  NOTIFY_SOCKET?: string
  WATCHDOG_USEC?: string
  WATCHDOG_PID?: string
  [name: string]: string | undefined
}

/** The variables a child process must not inherit: only the service's main process talks to systemd. */
export const systemdNotifyVariables = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const

/**
 * Tells systemd the service's state (`READY=1`, `WATCHDOG=1`) with the `systemd-notify` binary. The protocol
 * is one datagram on a unix socket, and Node cannot send one (node:dgram has no unix sockets). systemd-notify
 * waits until systemd has read the message (its BARRIER=1), so systemd still finds the sender's unit; the
 * sender is a child of the main process, which the unit admits with `NotifyAccess=all`.
 */
export class SystemdNotifier {
  /** How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises; undefined: no watchdog. */
  readonly watchdogIntervalMs: number | undefined
  readonly #env: SystemdEnvironment
  readonly #log: Logger
  #ready = false
  #warned = false

  private constructor(env: SystemdEnvironment, watchdogIntervalMs: number | undefined, log: Logger) {
    this.#env = env
    this.watchdogIntervalMs = watchdogIntervalMs
    this.#log = log
  }

  /** A notifier when systemd listens (NOTIFY_SOCKET is set), otherwise undefined: nothing to do. */
  static fromEnvironment(env: SystemdEnvironment, pid: number, log: Logger): SystemdNotifier | undefined {
    if (!env.NOTIFY_SOCKET) return undefined
    const usec = Number(env.WATCHDOG_USEC)
    const forUs = env.WATCHDOG_PID === undefined || env.WATCHDOG_PID === '' || Number(env.WATCHDOG_PID) === pid
    return new SystemdNotifier(env, forUs && Number.isFinite(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2_000)) : undefined, log)
  }

  /** READY=1, once: the worker polls. */
  ready(): void {
    if (this.#ready) return
    this.#ready = true
    this.#send('READY=1')
  }

  /** WATCHDOG=1: the poll loop keeps iterating. */
  ping(): void {
    this.#send('WATCHDOG=1')
  }

  #send(state: string): void {
    const child = spawn('systemd-notify', [state], { env: this.#env, stdio: 'ignore' })
    const warn = (why: string) => {
      if (this.#warned) return
      this.#warned = true // once: a missing binary would otherwise be logged at every ping
      this.#log.warn({ state, error: why }, 'systemd-notify failed: systemd may not see this replica ready, or its watchdog pings')
    }
    child.on('error', (error) => warn(error.message))
    child.on('exit', (code) => {
      if (code !== 0 && code !== null) warn(`exit code ${code}`)
    })
  }
}

/**
 * Pings systemd's watchdog every `watchdogIntervalMs` while `alive()` says the worker's poll loop keeps
 * iterating; stops pinging (and says so once) when it does not, so systemd ends and restarts the replica.
 */
export class SystemdWatchdog {
  #timer: NodeJS.Timeout | undefined
  #pinging = true

  constructor(
    private readonly notifier: SystemdNotifier,
    private readonly alive: () => boolean,
    private readonly log: Logger,
  ) {}

  start(): void {
    const every = this.notifier.watchdogIntervalMs
    if (every === undefined || this.#timer !== undefined) return
    this.#timer = setInterval(() => this.#tick(), every)
    this.#timer.unref()
  }

  stop(): void {
    clearInterval(this.#timer)
  }

  #tick(): void {
    const alive = this.alive()
    if (alive) this.notifier.ping()
    if (alive !== this.#pinging) {
      this.#pinging = alive
      if (alive) this.log.info('the worker\'s poll loop is iterating again: pinging the systemd watchdog again')
      else this.log.warn('the worker\'s poll loop has stopped iterating: no more systemd watchdog pings, so systemd restarts the replica')
    }
  }
}
