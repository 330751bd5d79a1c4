import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    // sink-outages stops the shared RabbitMQ, NATS and Redis: it runs alone, after the rest (see package.json)
    include: process.env.OUTBOX_TEST_OUTAGES ? ['test/sink-outages.test.ts'] : ['test/**/*.test.ts'],
    exclude: process.env.OUTBOX_TEST_OUTAGES ? [] : ['test/sink-outages.test.ts', '**/node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    // Each file gets its own database, so files run in parallel; process tests spawn real replicas.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    forbidOnly: !!process.env.CI,
    reporters: ['default'],
  },
})
