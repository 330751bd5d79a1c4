import { describe, expect, it } from 'vitest'
import { hasLongNumber, parseForRestringify, parseLosslessJson, stringifyLosslessJson } from '../../src/poller/lossless-json.js'

describe('lossless JSON', () => {
  it('parses plain JSON as JSON.parse does', () => {
    const text = '{"a":1,"b":[1.5,-2,"x"],"c":{"d":null,"e":true}}'
    expect(parseLosslessJson(text)).toEqual(JSON.parse(text))
  })

  it('keeps an integer beyond the safe range as a BigInt, and a decimal a double cannot hold as its text', () => {
    expect(parseLosslessJson('{"n":9007199254740993}')).toEqual({ n: 9007199254740993n })
    expect(parseLosslessJson('{"n":0.12345678901234567890}')).toEqual({ n: '0.12345678901234567890' })
    expect(parseLosslessJson('{"n":1234567890.123456}')).toEqual({ n: 1234567890.123456 })
  })

  it('finds a run of 16 digits wherever it lies, and none in shorter numbers', () => {
    expect(hasLongNumber('{"n":123456789012345}')).toBe(false)
    expect(hasLongNumber('{"n":1234567890123456}')).toBe(true)
    expect(hasLongNumber(`{"pad":"${'x'.repeat(37)}","n":1234567890123456}`)).toBe(true)
    expect(hasLongNumber('1234567890123456')).toBe(true)
  })

  it('writes every number back as it was stored', () => {
    const text = '{"big":9007199254740993,"exact":0.12345678901234567890,"small":1.5}'
    expect(JSON.stringify(parseForRestringify(text))).toBe(text)
    expect(stringifyLosslessJson({ n: 9007199254740993n })).toBe('{"n":9007199254740993}')
  })
})
