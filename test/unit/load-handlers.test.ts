import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadHandlers } from '../../src/cli/load-handlers.js'
import { ConfigError } from '../../src/errors.js'
import { HandlerRegistry } from '../../src/poller/handler-registry.js'

let directory: string

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'outbox-load-handlers-'))
})
afterAll(async () => {
  await rm(directory, { recursive: true, force: true })
})

async function moduleFile(name: string, source: string): Promise<string> {
  const file = join(directory, name)
  await writeFile(file, source)
  return file
}

describe('how a handler module closes what it opened', () => {
  it('an ES module names it with the export close; close is not a pattern', async () => {
    const loaded = await loadHandlers(await moduleFile('named.mjs', `export default { 'a.*': () => {} }\nexport async function close() { return 'closed' }\n`))
    expect(await loaded.close?.()).toBe('closed')
    expect(new HandlerRegistry(loaded.handlers).size).toBe(1)
  })

  it('a CommonJS function export may carry close as a property', async () => {
    const loaded = await loadHandlers(await moduleFile('function.cjs', `module.exports = function handle() {}\nmodule.exports.close = async () => 'closed'\n`))
    expect(await loaded.close?.()).toBe('closed')
  })

  it('in a CommonJS object of patterns, close is the handler of the event type "close", and Symbol.asyncDispose closes the module', async () => {
    const file = await moduleFile('object.cjs', `const close = () => {}\nmodule.exports = { close, [Symbol.asyncDispose]: async () => 'disposed' }\n`)
    const loaded = await loadHandlers(file)
    expect(new HandlerRegistry(loaded.handlers).match('close').each).toHaveLength(1)
    expect(await loaded.close?.()).toBe('disposed')
  })

  it('a module without one has none', async () => {
    expect((await loadHandlers(await moduleFile('none.mjs', 'export default () => {}\n'))).close).toBeUndefined()
  })

  it('a close that is not a function is a configuration error naming it', async () => {
    await expect(loadHandlers(await moduleFile('bad.mjs', 'export default () => {}\nexport const close = 42\n'))).rejects.toThrow(new ConfigError(`handler module ${join(directory, 'bad.mjs')}: the export close must be a function (got number)`))
    await expect(loadHandlers(await moduleFile('bad.cjs', 'module.exports = { "*": () => {}, [Symbol.asyncDispose]: 1 }\n'))).rejects.toThrow(/\[Symbol\.asyncDispose\] must be a function \(got number\)/)
  })
})
