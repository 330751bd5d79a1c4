import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import type { Sql } from 'postgres'
import { quoteIdent, quoteLiteral } from '../../src/outbox/outbox-table.js'
import { createTenant } from './tenants.js'

const run = promisify(execFile)

/** The template schema's name: outside every tenant pattern, and unique enough to replace in a dump. */
export const templateSchema = 'template_tenant'

/**
 * Many tenant schemas from a template, as a multi-tenant application builds them: the template schema is
 * made once (migrated, its table captured), dumped with pg_dump, and the dump replayed under each tenant's
 * name in one psql run: the same objects as migrating and capturing every schema, in a fraction of the time.
 * The registry of captured tables keeps table oids, which are the clone's own after the replay. Where pg_dump is
 * older than the server, each tenant is migrated and captured in turn instead.
 */
export async function createTenantsFromTemplate(sql: Sql, url: string, schemas: readonly string[]): Promise<void> {
  const [{ exists }] = await sql`select to_regnamespace(${templateSchema}) is not null as exists`
  if (!exists) await createTenant(sql, templateSchema)
  const dumped = await run('pg_dump', ['--schema', templateSchema, '--no-owner', '--no-comments', url], { maxBuffer: 64 * 1024 * 1024 }).catch((error: Error) => {
    // the system's pg_dump refuses a newer server (the embedded PostgreSQL 18 has none of its own): build each tenant
    if (/server version mismatch/.test(error.message)) return undefined
    throw error
  })
  if (dumped === undefined) {
    for (const schema of schemas) await createTenant(sql, schema)
    return
  }
  const dump = dumped.stdout
  const body = dump.split('\n').filter((line) => !line.startsWith('SELECT pg_catalog.set_config')).join('\n')
  const script = schemas
    .map((schema) => `${body.replaceAll(templateSchema, schema)}\nupdate ${quoteIdent(schema)}.outbox_captured set relid = format('%I.%I', table_schema, table_name)::regclass::oid where table_schema = ${quoteLiteral(schema)};\n`)
    .join('\n')
  await psql(url, script)
}

function psql(url: string, script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', '-q', '-1', '-v', 'ON_ERROR_STOP=1', '-d', url, '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`psql exited with ${code}: ${stderr.slice(0, 2000)}`))))
    child.stdin.end(script)
  })
}
