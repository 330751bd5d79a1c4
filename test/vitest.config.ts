import { defineConfig } from 'vitest/config'

// test/db and test/process: each file gets its own database on the server global-setup finds, so files
// run in parallel; process tests spawn the real CLI; browser tests drive Debian's Chromium against it. test/outages stops the shared RabbitMQ, NATS and
// Redis: it runs alone, after the rest (OUTBOX_TEST_OUTAGES=1, see package.json). test/scale (500 tenant
// schemas) runs alone too, with OUTBOX_TEST_SCALE=1 (`npm test` runs it before the outages, `npm run test:scale` by itself). test/unit has its own
// config and needs no database.
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: process.env.OUTBOX_TEST_OUTAGES ? ['test/outages/**/*.test.ts'] : process.env.OUTBOX_TEST_SCALE ? ['test/scale/**/*.test.ts'] : ['test/db/**/*.test.ts', 'test/process/**/*.test.ts', 'test/browser/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    // the files mostly wait (on processes, timers, the server), so more run at once than there are cores
    maxWorkers: 3,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    forbidOnly: !!process.env.CI,
    reporters: ['default'],
  },
})
