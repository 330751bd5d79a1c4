import { defineConfig } from 'vitest/config'

// Pure logic: no database, no broker, no process; runs in seconds.
export default defineConfig({
  test: {
    root: new URL('..', import.meta.url).pathname,
    include: ['test/unit/**/*.test.ts'],
    forbidOnly: !!process.env.CI,
    reporters: ['default'],
  },
})
