import type { TestProject } from 'vitest/node'
import { startEmbeddedPostgres } from '../../src/database/embedded-postgres.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** A server-level connection string; each test file creates its own database on it. */
    adminDatabaseUrl: string
  }
}

/**
 * Finds the PostgreSQL the suite runs against, in this order: OUTBOX_TEST_DATABASE_URL or DATABASE_URL;
 * testcontainers' PostgreSQL module when a container runtime answers; otherwise an embedded PostgreSQL.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const configured = process.env.OUTBOX_TEST_DATABASE_URL || process.env.DATABASE_URL
  if (configured) {
    project.provide('adminDatabaseUrl', configured)
    console.log(`tests: PostgreSQL from ${process.env.OUTBOX_TEST_DATABASE_URL ? 'OUTBOX_TEST_DATABASE_URL' : 'DATABASE_URL'}`)
    return async () => {}
  }
  const container = await startContainer()
  if (container) {
    project.provide('adminDatabaseUrl', container.url)
    console.log('tests: PostgreSQL in a testcontainers container')
    return container.stop
  }
  const embedded = await startEmbeddedPostgres()
  project.provide('adminDatabaseUrl', embedded.url)
  console.log('tests: embedded PostgreSQL (no DATABASE_URL, no container runtime)')
  return embedded.stop
}

async function startContainer(): Promise<{ url: string; stop: () => Promise<void> } | undefined> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await getContainerRuntimeClient()
  } catch {
    return undefined // no Docker or Podman here
  }
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
  const container = await new PostgreSqlContainer('postgres:18-alpine').withCommand(['postgres', '-c', 'max_connections=300']).start()
  return { url: container.getConnectionUri(), stop: async () => void (await container.stop()) }
}
