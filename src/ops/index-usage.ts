import type { Sql } from 'postgres'

/**
 * The pages an index uses (metapage, internal and non-empty leaf pages) by pgstattuple's `pgstatindex`, where that
 * extension is installed and this role may call it (a superuser, or a member of pg_stat_scan_tables); undefined
 * otherwise, or for an index it cannot read. Nothing requires it: cleanup weighs the index by its insert churn
 * alone without (see index-bloat.ts).
 *
 * Why: measured just before cleanup's VACUUM, the pages in use are what the interval since the last one needed,
 * whether the claims' scans marked the dead entries as the pages filled (the pages stay few) or not (every insert
 * kept until VACUUM); the file's other pages are free, left from a spell when they were not marked.
 */
export async function indexPagesInUse(sql: Sql, indexes: string[]): Promise<Map<string, number>> {
  const used = new Map<string, number>()
  if (indexes.length === 0) return used
  const [extension] = await sql<Array<{ schema: string }>>`
    select n.nspname as schema from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pgstattuple'`
  if (extension === undefined) return used
  const fn = `"${extension.schema.replaceAll('"', '""')}".pgstatindex`
  const [allowed] = await sql<Array<{ ok: boolean }>>`select has_function_privilege(${`${fn}(regclass)`}, 'execute') as ok`
  if (!allowed!.ok) return used
  for (const index of indexes) {
    try {
      const [row] = await sql.unsafe<Array<{ pages: string }>>(`select 1 + internal_pages + leaf_pages as pages from ${fn}($1::regclass)`, [index])
      used.set(index, Number(row!.pages))
    } catch {
      // dropped meanwhile, or refused (pgstatindex checks more than EXECUTE): weighed without
    }
  }
  return used
}
