/** Quotes an identifier the way PostgreSQL's quote_ident does, always (so case and punctuation survive). */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** Quotes a string literal. */
export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`
}

/**
 * The SQL condition of a pending event: neither processed nor dead, due now or waiting for a retry. Written
 * as the partial indexes' predicates are, so a count over it is an index scan.
 */
export const pendingCondition = 'processed_at is null and dead_at is null'

/** Every name derived from the outbox's schema and table, quoted once, here. */
export interface OutboxTable {
  readonly schema: string
  readonly table: string
  /** `"schema"."table"` */
  readonly qualified: string
  /** `"schema"."table_wakeup"`: the one-row flag that says a poller sleeps. */
  readonly wakeup: string
  /** The LISTEN/NOTIFY channel. */
  readonly channel: string
  /** Name of the capture triggers on captured tables (`<schema>_<table>_capture`, and with the suffixes `_update`, `_stmt_i|u|d|t`). */
  readonly captureTrigger: string
  /** `"schema"."table_capture"`: the capture trigger function. */
  readonly captureFunction: string
  /** `"schema"."table_capture_rows"`: the statement-level capture function (transition tables). */
  readonly captureRowsFunction: string
  /** `"schema"."table_capture_truncate"`: the statement-level function of the truncate trigger. */
  readonly captureTruncateFunction: string
  readonly captureTableFunction: string
  /** Writes a table's row or statement capture triggers and registry row from column numbers (0008's `<outbox>_capture_attach`). */
  readonly captureAttachFunction: string
  /** Attaches or detaches a table's TRUNCATE trigger (0007's `<outbox>_capture_truncate_attach`). */
  readonly captureTruncateAttachFunction: string
  readonly uncaptureTableFunction: string
  /** `"schema"."table_emit"`: writes an explicit event. */
  readonly emitFunction: string
  /** `"schema"."table_captured"`: the registry of captured tables, as they were when captured. */
  readonly captured: string
  /** `"schema"."table_entity_pending"`: the index ordered claims need (`migrate --ordering entity` or `group`). */
  readonly entityPendingIndex: string
  /** `"schema"."table_group_pending"`: the index group-ordered claims need too (`migrate --ordering group`). */
  readonly groupPendingIndex: string
  /** `"schema"."table_truncated_pending"`: the pending `.truncated` events, the barriers of an ordered claim (created with the ordering index). */
  readonly truncatedPendingIndex: string
  /** `"schema"."table_settings"`: settings of the outbox itself (the ordering mode). */
  readonly settings: string
  /** Bookkeeping table of our migrations, in the outbox's schema. */
  readonly migrationTable: string
}

export function outboxTable(schema: string, table: string): OutboxTable {
  const derived = (suffix: string) => `${quoteIdent(schema)}.${quoteIdent(table + suffix)}`
  return {
    schema,
    table,
    qualified: derived(''),
    wakeup: derived('_wakeup'),
    channel: truncateBytes(`outbox_poller.${schema}.${table}`, 63),
    captureTrigger: truncateBytes(`${schema}_${table}_capture`, 56),
    captureFunction: derived('_capture'),
    captureRowsFunction: derived('_capture_rows'),
    captureTruncateFunction: derived('_capture_truncate'),
    captureTableFunction: derived('_capture_table'),
    captureAttachFunction: derived('_capture_attach'),
    captureTruncateAttachFunction: derived('_capture_truncate_attach'),
    uncaptureTableFunction: derived('_uncapture_table'),
    emitFunction: derived('_emit'),
    captured: derived('_captured'),
    entityPendingIndex: derived('_entity_pending'),
    groupPendingIndex: derived('_group_pending'),
    truncatedPendingIndex: derived('_truncated_pending'),
    settings: derived('_settings'),
    migrationTable: `${table}_poller_migration`,
  }
}

/** PostgreSQL truncates names to 63 bytes; do it ourselves so we and the server agree on the name. */
function truncateBytes(text: string, bytes: number): string {
  const buffer = Buffer.from(text)
  if (buffer.length <= bytes) return text
  return buffer.subarray(0, bytes).toString().replace(/\uFFFD$/, '')
}

/** Fills the placeholders of a migration file (see the header of sql/migrations/0001_outbox.sql). */
export function fillPlaceholders(sqlText: string, outbox: OutboxTable): string {
  return sqlText.replace(/\{\{(\w+)(?::(\w*))?\}\}/g, (whole, key: string, suffix: string | undefined) => {
    switch (key) {
      case 'schema':
        return quoteIdent(outbox.schema)
      case 'outbox':
        return outbox.qualified
      case 'name':
        return quoteIdent(outbox.table + (suffix ?? ''))
      case 'channel':
        return quoteLiteral(outbox.channel)
      case 'capture_trigger':
        return quoteLiteral(outbox.captureTrigger)
      case 'capture_function':
        return quoteLiteral(outbox.captureFunction)
      case 'qualified_literal':
        return quoteLiteral(`${quoteIdent(outbox.schema)}.${quoteIdent(outbox.table + (suffix ?? ''))}`)
      default:
        throw new Error(`unknown placeholder ${whole} in a migration`)
    }
  })
}
