import { ConfigError, errorMessage, RetryLaterError } from '../errors.js'

/** The error's message with the sink's secrets masked, so that nothing a client library echoes leaks a credential. */
export function sinkErrorMessage(error: unknown, secrets: readonly string[]): string {
  let text = errorMessage(error)
  if (error instanceof Error && error.cause instanceof Error && !text.includes(error.cause.message)) text = `${text}: ${error.cause.message}`
  for (const secret of secrets) text = text.split(secret).join('***')
  return text
}

/** A sink that cannot take the event now: back to the queue with no attempt charged. */
export function sinkUnavailable(name: string, reason: string): RetryLaterError {
  return new RetryLaterError(`${name} is unavailable: ${reason}`)
}

/** A per-message rejection by the broker or endpoint: the event is charged an attempt and retried with backoff. */
export function sinkRejected(name: string, reason: string): Error {
  return new Error(`${name}: ${reason}`)
}

/** A mistake in the sink's URL or the broker's setup that no retry fixes: start-up stops with one line. */
export function sinkMisconfigured(name: string, reason: string): ConfigError {
  return new ConfigError(`sink ${JSON.stringify(name)}: ${reason}`)
}

/** Rejects with `onTimeout()` if `promise` has not settled within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms)
    promise.then(
      (value) => (clearTimeout(timer), resolve(value)),
      (error: unknown) => (clearTimeout(timer), reject(error)),
    )
  })
}
