import type { PollerOptions } from './poller/poller-options.js'
import { OutboxPoller, type Poller } from './poller/poller.js'
import { TenantPoller } from './tenants/tenant-poller.js'

/** Creates a poller. Nothing connects until `start()`. With `schemas`, one poller serves every matching schema's outbox. */
export function createPoller(options: PollerOptions): Poller {
  return options.schemas === undefined ? new OutboxPoller(options) : new TenantPoller(options)
}
