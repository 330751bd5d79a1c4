import type { PollerOptions } from '../poller/poller-options.js'
import type { SupervisorMessage, WorkerMessage } from './worker-protocol.js'

/** The worker's end of the IPC channel to its supervisor; the CLI passes its process's. */
export interface SupervisorChannel {
  readonly connected: boolean
  /** Calls back once the message is handed to the OS (or failed: the supervisor is gone). */
  send(message: WorkerMessage, sent: () => void): void
  onMessage(listener: (message: SupervisorMessage) => void): void
  onDisconnect(listener: () => void): void
}

/**
 * The worker's half of the protocol (the supervisor holds the other): batch reports and heartbeats up,
 * with the ids flushed to the supervisor before any handler runs; drain and force requests down.
 */
export class WorkerLink {
  readonly #channel: SupervisorChannel
  #lastHeartbeat = 0

  constructor(channel: SupervisorChannel) {
    this.#channel = channel
  }

  /** The poller hooks that report to the supervisor. */
  readonly hooks: Required<Pick<PollerOptions, 'beforeDispatch' | 'afterBatch'>> = {
    beforeDispatch: (ids, finished, lane) => this.#send(lane === undefined ? { type: 'dispatching', ids, finished } : { type: 'dispatching', ids, finished, lane }),
    afterBatch: (report) => {
      if (report.claimed > 0) void this.#send({ type: 'settled', report })
      else if (!report.committed) void this.#send({ type: 'heartbeat', claimFailed: true })
      else if (Date.now() - this.#lastHeartbeat >= 1000) {
        this.#lastHeartbeat = Date.now()
        void this.#send({ type: 'heartbeat' })
      }
    },
  }

  /** Connected and polling. */
  ready(): void {
    void this.#send({ type: 'ready' })
  }

  /** `stop` on the supervisor's drain (`force`: its force), and a drain when the supervisor disappears. */
  onStopRequest(stop: (why: string, force: boolean) => void): void {
    this.#channel.onMessage((message) => stop(message.type === 'drain' ? `supervisor: ${message.reason}` : 'supervisor: force', message.type === 'force'))
    this.#channel.onDisconnect(() => stop('supervisor gone', false))
  }

  #send(message: WorkerMessage): Promise<void> {
    return new Promise<void>((resolve) => {
      if (!this.#channel.connected) return resolve()
      this.#channel.send(message, resolve)
    })
  }
}
