import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const binPath = fileURLToPath(new URL('../../bin/outbox-poller.js', import.meta.url))
export const fixturePath = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

/** Environment for a child: no inherited outbox settings, so only what a test passes counts. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('OUTBOX_POLLER_') && key !== 'DATABASE_URL'))
  return { ...clean, ...env }
}

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs the CLI to completion. */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [binPath, ...args], { env: childEnv(env) })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

/** A running replica: its process, its output so far, and its exit. */
export interface Replica {
  child: ChildProcess
  output: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export function startReplica(args: string[], env: Record<string, string>): Replica {
  const child = spawn(process.execPath, [binPath, ...args], { env: childEnv(env) })
  let output = ''
  child.stdout!.on('data', (chunk) => (output += chunk))
  child.stderr!.on('data', (chunk) => (output += chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })))
  return { child, output: () => output, exited }
}

/** Ends every replica a test started (SIGKILL if still running) and waits for each to exit; empties the list. */
export async function killReplicas(replicas: Replica[]): Promise<void> {
  for (const replica of replicas.splice(0)) {
    if (replica.child.exitCode === null && replica.child.signalCode === null) replica.child.kill('SIGKILL')
    await replica.exited
  }
}
