import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { BenchReport, BenchTask } from './bench-worker.js'

export type BenchProcessTask = BenchTask | { mode: 'floor'; url: string; schema: string; batchSize: number }

const workerPath = fileURLToPath(new URL('./bench-worker.js', import.meta.url))
// the floor loads postgres.js alone, so its memory is a floor too
const floorPath = fileURLToPath(new URL('./floor-loop.js', import.meta.url))

/** A bench child process and the calls the bench makes on it. */
export interface BenchProcess {
  go(): void
  report(): Promise<BenchReport>
  stop(): Promise<void>
}

/** Starts the processes of a task and resolves once every one is connected and ready. */
export async function startBenchProcesses(count: number, task: BenchProcessTask): Promise<BenchProcess[]> {
  return Promise.all(Array.from({ length: count }, () => startOne(task)))
}

function startOne(task: BenchProcessTask): Promise<BenchProcess> {
  const child: ChildProcess = fork(task.mode === 'floor' ? floorPath : workerPath, [JSON.stringify(task)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const next = (type: string) =>
    new Promise<any>((resolve, reject) => {
      const onMessage = (message: { type: string }) => {
        if (message.type !== type) return
        child.off('exit', onExit)
        child.off('message', onMessage)
        resolve(message)
      }
      const onExit = (code: number | null) => reject(new Error(`bench ${task.mode} process exited with code ${code} before '${type}'`))
      child.on('message', onMessage)
      child.once('exit', onExit)
    })
  return next('ready').then(() => ({
    go: () => child.send({ type: 'go' }),
    report: () => {
      const reply = next('report') as Promise<BenchReport>
      child.send({ type: 'report' })
      return reply
    },
    stop: async () => {
      if (child.connected) child.send({ type: 'stop' })
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }))
}
