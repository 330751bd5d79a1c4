/**
 * An event's id across tenants: `<schema>:<id>`. Row ids are per outbox, so the ids a multi-tenant worker
 * announces to its supervisor name their schema, and a crash is charged to the right tenant's rows. The id
 * is digits only, so the last `:` separates them whatever the schema's name.
 */
export function tenantEventId(schema: string, id: string): string {
  return `${schema}:${id}`
}

/** `{ schema, id }` of a tenant event id; a bare id (a single-outbox worker's) has no schema. */
export function parseTenantEventId(qualified: string): { schema: string | undefined; id: string } {
  const colon = qualified.lastIndexOf(':')
  if (colon < 0) return { schema: undefined, id: qualified }
  return { schema: qualified.slice(0, colon), id: qualified.slice(colon + 1) }
}

/** Ids grouped by schema (`fallback` for bare ids), in first-seen order. */
export function groupTenantEventIds(ids: readonly string[], fallback: string): Map<string, string[]> {
  const groups = new Map<string, string[]>()
  for (const qualified of ids) {
    const { schema, id } = parseTenantEventId(qualified)
    const key = schema ?? fallback
    let group = groups.get(key)
    if (group === undefined) groups.set(key, (group = []))
    group.push(id)
  }
  return groups
}
