import { describe, expect, it } from 'vitest'
import { formatTraceparent, parseTraceparent, writerTraceparent } from '../../src/poller/traceparent.js'

const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

describe('W3C traceparent', () => {
  it('parses the version-00 form into a remote span context and formats it back', () => {
    const parsed = parseTraceparent(valid)
    expect(parsed).toEqual({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true })
    expect(formatTraceparent(parsed!)).toBe(valid)
    expect(formatTraceparent({ ...parsed!, traceFlags: 0 })).toBe(valid.replace(/01$/, '00'))
  })

  it('accepts a later version with more fields, as W3C asks', () => {
    expect(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future')?.spanId).toBe('00f067aa0ba902b7')
  })

  it.each([
    ['version ff', valid.replace(/^00/, 'ff')],
    ['version 00 with more fields', `${valid}-x`],
    ['an all-zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['an all-zero span id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'],
    ['upper-case hex', valid.toUpperCase()],
    ['a short trace id', '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'],
    ['surrounding space', ` ${valid}`],
    ['an empty string', ''],
  ])('refuses %s', (_what, text) => {
    expect(parseTraceparent(text)).toBeUndefined()
  })

  it('refuses what is not a string', () => {
    expect(parseTraceparent(42)).toBeUndefined()
    expect(parseTraceparent(undefined)).toBeUndefined()
  })

  it("takes the writer's traceparent from metadata only when it has the W3C form", () => {
    expect(writerTraceparent({ traceparent: valid, txid: '1' })).toBe(valid)
    expect(writerTraceparent({ traceparent: 'junk' })).toBeUndefined()
    expect(writerTraceparent({ txid: '1' })).toBeUndefined()
    expect(writerTraceparent(null)).toBeUndefined()
  })
})
