/**
 * JSON numbers without silent loss. PostgreSQL's `numeric` and `bigint` hold values a JavaScript number
 * cannot: parsed plainly, `9007199254740993` becomes `9007199254740992`. Here an integer beyond
 * ±Number.MAX_SAFE_INTEGER becomes a BigInt, and any other number a double cannot hold exactly becomes
 * its exact decimal text, as a string. Every other number stays a number.
 */

/** The reviver's third argument (Node 22): the number's text as written. */
interface ReviverContext {
  source?: string
}

/** JSON.rawJSON (Node 22): a value JSON.stringify writes as the given primitive JSON text. */
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

/**
 * Whether the text has a run of 16 digits or points, the least a number needs to not fit a double (one of
 * at most 15 significant digits always survives one). Text without one, the common case, takes plain
 * JSON.parse. The scan looks at every 16th character only, unless it is a digit or a point: about 5 % of
 * the parse's time on a typical payload, where a regular expression took more than the parse.
 */
export function hasLongNumber(text: string): boolean {
  for (let i = 15; i < text.length; ) {
    if (!isNumberChar(text.charCodeAt(i))) {
      i += 16
      continue
    }
    let start = i
    while (start > 0 && isNumberChar(text.charCodeAt(start - 1))) start--
    let end = i
    while (end - start < 15 && end + 1 < text.length && isNumberChar(text.charCodeAt(end + 1))) end++
    if (end - start >= 15) return true
    i = end + 17 // the next run starts after the character that ended this one
  }
  return false
}

function isNumberChar(code: number): boolean {
  return (code >= 48 && code <= 57) || code === 46
}

/** Parses JSON text; numbers a double cannot hold exactly become BigInt (integers) or strings (decimals). */
export function parseLosslessJson(text: string): unknown {
  if (!hasLongNumber(text)) return JSON.parse(text)
  return JSON.parse(text, (_key, value: unknown, context?: ReviverContext) => (typeof value === 'number' && context?.source !== undefined ? exactNumber(value, context.source) : value))
}

/**
 * Parses JSON text into values JSON.stringify writes back with every number as it was written (those a
 * double cannot hold as JSON.rawJSON values): for re-serializing a payload without loss.
 */
export function parseForRestringify(text: string): unknown {
  if (!hasLongNumber(text)) return JSON.parse(text)
  return JSON.parse(text, (_key, value: unknown, context?: ReviverContext) => {
    if (typeof value !== 'number' || context?.source === undefined) return value
    return exactNumber(value, context.source) === value ? value : rawJSON(context.source)
  })
}

/** JSON.stringify that writes a BigInt as its digits (a JSON number) instead of throwing. */
export function stringifyLosslessJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? rawJSON(item.toString()) : item))
}

function exactNumber(value: number, source: string): number | bigint | string {
  if (/^-?\d+$/.test(source)) return Number.isSafeInteger(value) ? value : BigInt(source)
  return decimalKey(source) === decimalKey(String(value)) ? value : source
}

/** A number's significant digits and decimal exponent: two texts of the same value give the same key (`1.50`, `1.5`, `15e-1`). */
function decimalKey(text: string): string {
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text) ?? []
  const digits = whole + fraction
  const first = digits.search(/[1-9]/)
  if (first === -1) return '0'
  return `${sign}${digits.slice(first).replace(/0+$/, '')}e${whole.length - first + Number(exponent)}`
}
