import { describe, expect, it } from 'vitest'
import { resolveConsoleOptions } from '../../src/console/console-options.js'
import { html } from '../../src/console/html.js'
import { patternMatches } from '../../src/poller/paused-types.js'

describe('console html', () => {
  it('escapes every interpolated value, and only nested templates pass as markup', () => {
    const hostile = `<img src=x onerror="alert('1')">&`
    expect(html`<td title="${hostile}">${hostile}</td>`.text).toBe('<td title="&#60;img src=x onerror=&#34;alert(&#39;1&#39;)&#34;&#62;&#38;">&#60;img src=x onerror=&#34;alert(&#39;1&#39;)&#34;&#62;&#38;</td>')
    expect(html`<tr>${[1, 2].map((n) => html`<td>${n}</td>`)}</tr>`.text).toBe('<tr><td>1</td><td>2</td></tr>')
    expect(html`${undefined}${null}${false}${0}`.text).toBe('0')
  })
})

describe('console options', () => {
  it('binds to loopback by default, read-only without a token', () => {
    expect(resolveConsoleOptions({})).toEqual({ host: '127.0.0.1', port: 7407, token: undefined, showPayloads: false, loopback: true })
  })

  it('refuses a non-loopback address without a token, and a short token', () => {
    expect(() => resolveConsoleOptions({ host: '0.0.0.0' })).toThrow('host 0.0.0.0 is not a loopback address: the console refuses to start there without a token (token)')
    expect(() => resolveConsoleOptions({ token: 'short' })).toThrow('token must be at least 16 characters (got 5)')
    expect(resolveConsoleOptions({ host: '10.0.0.5', token: 'a-long-enough-token' }).loopback).toBe(false)
    expect(resolveConsoleOptions({ host: '::1' }).loopback).toBe(true)
  })
})

describe('paused patterns', () => {
  it('match types as handler patterns do', () => {
    expect(patternMatches('*', 'a.b')).toBe(true)
    expect(patternMatches('billing.*', 'billing.invoice.created')).toBe(true)
    expect(patternMatches('billing.*', 'billing')).toBe(false)
    expect(patternMatches('billing.*', 'billingx.created')).toBe(false)
    expect(patternMatches('billing.invoice', 'billing.invoice')).toBe(true)
    expect(patternMatches('billing.invoice', 'billing.invoice.created')).toBe(false)
  })
})
