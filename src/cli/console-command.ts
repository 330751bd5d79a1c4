export function registerConsoleCommand(..._: unknown[]): void {}
