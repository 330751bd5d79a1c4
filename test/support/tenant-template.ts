import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import postgres, { type Sql } from 'postgres'
import { quoteIdent, quoteLiteral } from '../../src/outbox/outbox-table.js'
import { createTenant } from './tenants.js'

const run = promisify(execFile)

/** The template schema's name: outside every tenant pattern, and unique enough to replace in a dump. */
export const templateSchema = 'template_tenant'

/**
 * Many tenant schemas from a template, as a multi-tenant application builds them: the template schema is
 * made once (migrated, its table captured), dumped with pg_dump, and the dump replayed under each tenant's
 * name in one psql run, one transaction per tenant (500 schemas in one transaction would need more locks than
 * the server's lock table holds): the same objects as migrating and capturing every schema, in a fraction of the time.
 * The registry of captured tables keeps table oids, which are the clone's own after the replay. Where pg_dump is
 * older than the server, each tenant is migrated and captured in turn instead, three at a time, on a new
 * session every ten (a session that has touched thousands of relations pays for each in every DDL statement).
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
    const chunks = Array.from({ length: Math.ceil(schemas.length / 10) }, (_, i) => schemas.slice(i * 10, i * 10 + 10))
    const builder = async () => {
      for (let chunk = chunks.shift(); chunk !== undefined; chunk = chunks.shift()) {
        const session = postgres(url, { max: 1, onnotice: () => {} })
        try {
          for (const schema of chunk) await createTenant(session, schema)
        } finally {
          await session.end()
        }
      }
    }
    await Promise.all([builder(), builder(), builder()])
    return
  }
  const dump = dumped.stdout
  const body = dump.split('\n').filter((line) => !line.startsWith('SELECT pg_catalog.set_config')).join('\n')
  const script = schemas
    .map((schema) => `begin;\n${body.replaceAll(templateSchema, schema)}\nupdate ${quoteIdent(schema)}.outbox_captured set relid = format('%I.%I', table_schema, table_name)::regclass::oid where table_schema = ${quoteLiteral(schema)};\ncommit;\n`)
    .join('\n')
  await psql(url, script)
}

function psql(url: string, script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`psql exited with ${code}: ${stderr.slice(0, 2000)}`))))
    child.stdin.end(script)
  })
}
