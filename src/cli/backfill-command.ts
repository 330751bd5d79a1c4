import type { Command } from 'commander'
import { backfill, defaultBackfillChunkSize, maxBackfillChunkSize } from '../backfill/backfill.js'
import type { BackfillProgress } from '../backfill/backfill-progress.js'
import { ConfigError } from '../errors.js'
import { outboxCheckExists } from '../outbox/outbox-checks.js'
import { integerOption } from '../poller/poller-options.js'
import { ExitCode } from '../supervisor/exit-codes.js'
import type { CommandAction } from './monitor-commands.js'
import { databaseCommand } from './options.js'
import { withDatabase } from './with-database.js'

/** Adds `backfill <table>` to the program. */
export function registerBackfillCommand(program: Command, action: CommandAction): void {
  databaseCommand(program, 'backfill <table>', 'write one <entity>.snapshot event per existing row of a captured table, in key order, in short chunks that are consistent with live changes; resumable')
    .option('--where <condition>', "only the rows matching this SQL condition on the table's columns, e.g. \"created_at > '2026-01-01'\" (runs with your rights)")
    .option('--chunk-size <n>', `rows per chunk, each its own short transaction (1-${maxBackfillChunkSize}) (default: ${defaultBackfillChunkSize})`)
    .option('--rate <rows/s>', 'most rows written per second, on average (default: no limit)')
    .option('--resume', 'continue the backfill of this table that stopped, with its condition (one of the same table and condition resumes anyway)')
    .option('--dry-run', 'only count the rows it would write')
    .option('--event-type <type>', 'event type of the snapshots, e.g. snapshot.order to keep them from order.* handlers (default: <entity>.snapshot)')
    .action(action((command, table) => backfillCommand(command, table!)))
}

async function backfillCommand(command: Command, table: string): Promise<number> {
  const flags = command.opts<{ where?: string; chunkSize?: string; rate?: string; resume?: boolean; dryRun?: boolean; eventType?: string }>()
  const chunkSize = integerOption(flags.chunkSize, '--chunk-size', defaultBackfillChunkSize, 1, maxBackfillChunkSize)
  const rate = flags.rate === undefined ? undefined : Number(flags.rate)
  if (rate !== undefined && !(rate > 0 && Number.isFinite(rate))) throw new ConfigError(`--rate must be a positive number of rows per second (got ${JSON.stringify(flags.rate)})`)
  if (flags.where !== undefined && flags.where.trim() === '') throw new ConfigError('--where must not be empty')
  const controller = new AbortController()
  const stop = () => controller.abort()
  process.once('SIGINT', stop).once('SIGTERM', stop)
  const report = progressReporter(process.stdout.isTTY === true)
  try {
    return await withDatabase(command, 'backfill', async (sql, outbox) => {
      await outboxCheckExists(sql, outbox, { current: true })
      const result = await backfill(sql, table, {
        outbox, where: flags.where, chunkSize, rate, resume: flags.resume, dryRun: flags.dryRun, eventType: flags.eventType,
        onProgress: report, signal: controller.signal,
      })
      const { progress } = result
      if (result.wouldWrite !== undefined) {
        console.log(`${progress.table}: ${result.wouldWrite} row${result.wouldWrite === 1 ? '' : 's'} to write as ${progress.eventType}${result.resumed ? ` (resuming the stopped backfill after key ${progress.lastKey})` : ''}`)
      } else if (progress.finishedAt === null) {
        report.end()
        console.log(`stopped ${progress.table} after ${progress.rows} rows (key ${progress.lastKey ?? '-'}): run outbox-poller backfill ${progress.table} --resume to continue`)
      } else {
        report.end()
        console.log(`backfilled ${progress.table}: ${progress.rows} ${progress.eventType} event${progress.rows === 1 ? '' : 's'} into ${outbox.qualified}`)
      }
      return ExitCode.ok
    })
  } finally {
    process.off('SIGINT', stop).off('SIGTERM', stop)
  }
}

/** A bar redrawn on a terminal; a line per chunk otherwise (a log, a pipe). */
function progressReporter(terminal: boolean): ((progress: BackfillProgress) => void) & { end(): void } {
  const started = performance.now()
  let first: number | undefined
  let drawn = false
  const report = (progress: BackfillProgress) => {
    first ??= progress.rows
    const seconds = (performance.now() - started) / 1000
    const rate = seconds > 0 ? Math.round((progress.rows - first) / seconds) : 0
    const share = progress.total === 0 ? 1 : Math.min(1, progress.rows / progress.total)
    const counts = `${progress.rows}/${progress.total} rows, ${rate} rows/s, key ${progress.lastKey ?? '-'}`
    if (terminal) {
      const width = 30
      const filled = Math.round(share * width)
      process.stdout.write(`\r${progress.table} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${Math.floor(share * 100)}% ${counts}\u001b[K`)
      drawn = true
    } else if (progress.rows > first || progress.finishedAt !== null) {
      console.log(`${progress.table}: ${counts} (${Math.floor(share * 100)}%)`)
    }
  }
  report.end = () => {
    if (drawn) process.stdout.write('\n')
  }
  return report
}
