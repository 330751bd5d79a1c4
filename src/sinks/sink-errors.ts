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

/**
 * Waits for every promise, at most `ms`: one entry per promise, undefined for a resolved one, its error for a
 * rejected one, `onTimeout()` for one still pending when the time is up (what settled before stays).
 */
export function settleWithin(promises: ReadonlyArray<Promise<unknown>>, ms: number, onTimeout: () => Error): Promise<unknown[]> {
  return new Promise((resolve) => {
    const pending = Symbol('pending')
    const results: unknown[] = promises.map(() => pending)
    let left = promises.length
    if (left === 0) return resolve(results)
    const done = () => {
      clearTimeout(timer)
      resolve(results)
    }
    const timer = setTimeout(() => {
      const timeout = onTimeout()
      for (let i = 0; i < results.length; i++) if (results[i] === pending) results[i] = timeout
      resolve(results)
    }, ms)
    promises.forEach((promise, i) => {
      promise.then(
        () => {
          if (results[i] !== pending) return
          results[i] = undefined
          if (--left === 0) done()
        },
        (error: unknown) => {
          if (results[i] !== pending) return
          results[i] = error ?? new Error('publish failed')
          if (--left === 0) done()
        },
      )
    })
  })
}
