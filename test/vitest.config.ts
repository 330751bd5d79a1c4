import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Each file gets its own database, so files run in parallel; process tests spawn real replicas.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    forbidOnly: !!process.env.CI,
    reporters: ['default'],
  },
})
