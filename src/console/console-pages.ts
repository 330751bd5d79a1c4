import type { CapturedTable } from '../capture/capture.js'
import type { DeadEvent, DeadEventDetail } from '../ops/dead.js'
import type { OutboxStatus } from '../ops/monitor.js'
import { patternMatches } from '../poller/paused-types.js'
import { type Html, html } from './html.js'

/** What every page's frame needs to know. */
export interface PageContext {
  outboxName: string
  /** The browser holds a valid session: actions are shown enabled. */
  signedIn: boolean
  /** The console was started with a token (else it is read-only). */
  actionsEnabled: boolean
  status: OutboxStatus | undefined
  statusError: string | undefined
}

const pages = [
  ['/', 'Overview'],
  ['/types', 'Event types'],
  ['/dead', 'Dead events'],
  ['/replicas', 'Replicas'],
  ['/captures', 'Captured tables'],
  ['/tail', 'Live tail'],
] as const

export function layout(ctx: PageContext, path: string, title: string, body: Html): Html {
  const session = !ctx.actionsEnabled
    ? html`<span class="badge">read-only (started without a token)</span>`
    : ctx.signedIn
      ? html`<span class="badge ok">signed in</span>`
      : html`<a class="badge" href="/login">sign in for actions</a>`
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · ${ctx.outboxName} · outbox-poller</title>
<link rel="stylesheet" href="/assets/console.css"><script src="/assets/console.js" defer></script></head>
<body><header><strong>outbox-poller</strong> <code>${ctx.outboxName}</code>
<nav>${pages.map(([href, name]) => html`<a href="${href}"${href === path ? html` class="current"` : ''}>${name}</a>`)}</nav>${session}</header>
<main><h1>${title}</h1>${ctx.statusError ? html`<p class="error">status query failed: ${ctx.statusError}</p>` : ''}${body}</main></body></html>`
}

const seconds = (value: number | null | undefined) => (value === null || value === undefined ? '-' : `${Number(value.toFixed(value < 1 ? 3 : value < 10 ? 2 : 0))} s`)

/** The overview: the status numbers (refreshed in place by console.js) and the last hour's charts. */
export function overviewPage(ctx: PageContext): Html {
  const s = ctx.status
  const card = (field: string, label: string, value: unknown) => html`<div class="card"><div class="label">${label}</div><div class="value" data-field="${field}">${value ?? '-'}</div></div>`
  const chart = (field: string, label: string) => html`<figure><figcaption>${label}</figcaption><svg class="chart" data-chart="${field}" viewBox="0 0 600 120" preserveAspectRatio="none"></svg></figure>`
  return html`<section class="cards" data-overview>
${card('pending', 'pending', s?.pending)}${card('due', 'due now', s?.due)}${card('retrying', 'waiting for retry', s?.retrying)}${card('suspect', 'suspect', s?.suspect)}
${card('paused', 'paused', s?.paused)}${card('dead', 'dead', s?.dead)}${card('processedLastMinute', 'processed / min', s?.processedLastMinute)}
${card('lag', 'lag (oldest pending)', s && seconds(s.oldestPendingSeconds))}${card('p50', 'latency p50', s && seconds(s.latency.p50))}
${card('p95', 'latency p95', s && seconds(s.latency.p95))}${card('p99', 'latency p99', s && seconds(s.latency.p99))}</section>
<p class="muted">at <span data-field="at">${s?.at.toISOString() ?? '-'}</span>; the charts cover the last hour of this console's samples (every 5 s)</p>
<section class="charts">${chart('pending', 'pending')}${chart('processedLastMinute', 'processed per minute')}${chart('lagSeconds', 'lag (s)')}${chart('p95', 'latency p95 (s)')}</section>
<h2>Layout</h2>${layoutSection(ctx)}
<h2>Paused event types</h2>${pausesTable(ctx)}${pauseForm(ctx, '')}`
}

/** How many partitions lie ahead, as the overview shows it (console.js writes the same when it refreshes). */
function partitionsAheadText(ahead: number, by: string): string {
  return ahead < 0 ? `none for the current ${by}` : String(ahead)
}

/**
 * The outbox's layout, as `status` shows it: a plain table, or the width, the partitions, how many lie ahead,
 * the events in the default partition, and each warning about upkeep (refreshed in place by console.js).
 */
function layoutSection(ctx: PageContext): Html {
  const layout = ctx.status?.layout
  if (layout === undefined) return html`<p class="muted">-</p>`
  if (layout.partitionBy === null) return html`<p data-layout="plain">plain table (not partitioned)</p>`
  const card = (field: string, label: string, value: unknown) => html`<div class="card"><div class="label">${label}</div><div class="value" data-field="${field}">${value}</div></div>`
  return html`<section class="cards" data-layout="${layout.partitionBy}">
${card('partitionBy', 'partitioned by', layout.partitionBy)}${card('partitions', 'range partitions', layout.partitions)}${card('partitionsAhead', `ahead of the current ${layout.partitionBy}`, partitionsAheadText(layout.ahead, layout.partitionBy))}${card('defaultRows', 'events in the default partition', layout.defaultRows)}</section>
<p class="muted">the newest partition ends <span data-field="newestEndsAt">${layout.newestEndsAt?.toISOString() ?? '-'}</span>; cleanup run as the outbox's owner keeps partitions ahead</p>
<div data-layout-warnings>${layout.warnings.map((warning) => html`<p class="error">${warning}</p>`)}</div>`
}

function pausesTable(ctx: PageContext): Html {
  const paused = ctx.status?.pausedTypes ?? []
  if (paused.length === 0) return html`<p class="muted">no event type is paused</p>`
  return html`<table><thead><tr><th>pattern</th><th>since</th><th>by</th><th></th></tr></thead><tbody>
${paused.map((p) => html`<tr data-paused="${p.pattern}"><td><code>${p.pattern}</code></td><td>${p.since.toISOString()}</td><td>${p.pausedBy}</td>
<td>${actionForm(ctx, '/actions/resume', { pattern: p.pattern }, 'Resume')}</td></tr>`)}</tbody></table>`
}

function pauseForm(ctx: PageContext, pattern: string): Html {
  if (!ctx.signedIn) return html``
  return html`<form method="post" action="/actions/pause" class="inline"><label>pause pattern <input name="pattern" value="${pattern}" placeholder="billing.*" required></label> <button>Pause</button></form>`
}

/** A one-button POST form; rendered disabled when the browser may not act. */
function actionForm(ctx: PageContext, action: string, fields: Record<string, string>, label: string, danger = false): Html {
  const hidden = Object.entries(fields).map(([name, value]) => html`<input type="hidden" name="${name}" value="${value}">`)
  return html`<form method="post" action="${action}" class="inline">${hidden}<button${danger ? html` class="danger"` : ''}${ctx.signedIn ? '' : html` disabled title="sign in with the token to act"`}>${label}</button></form>`
}

export function typesPage(ctx: PageContext): Html {
  const types = ctx.status?.types ?? []
  const paused = ctx.status?.pausedTypes.map((p) => p.pattern) ?? []
  const pausedBy = (type: string) => paused.find((pattern) => patternMatches(pattern, type))
  const replay = ctx.signedIn
    ? html`<h2>Replay processed events</h2><form method="post" action="/actions/replay-processed" class="inline"><label>type <input name="type" placeholder="billing.* or *" required></label>
<label>processed within <input name="since" placeholder="1h" required></label> <button>Replay</button></form>`
    : html``
  if (types.length === 0) return html`<p class="muted">no event type pending, dead or processed in the last hour</p>${replay}`
  return html`<p class="muted">measured every minute (and after each action): reading the last hour's processed events costs more than the overview's counts</p>${replay}<table><thead><tr><th>event type</th><th class="num">pending</th><th class="num">dead</th><th class="num">processed 1h</th><th class="num">p95 5m</th><th></th></tr></thead><tbody>
${types.map((t) => html`<tr data-type="${t.eventType}"><td><code>${t.eventType}</code></td><td class="num">${t.pending}</td><td class="num">${t.dead > 0 ? html`<a href="/dead?type=${encodeURIComponent(t.eventType)}">${t.dead}</a>` : 0}</td>
<td class="num">${t.processedLastHour}</td><td class="num">${seconds(t.p95)}</td>
<td>${pausedBy(t.eventType) === undefined ? actionForm(ctx, '/actions/pause', { pattern: t.eventType }, 'Pause') : html`<span class="badge">paused by <code>${pausedBy(t.eventType)}</code></span> ${actionForm(ctx, '/actions/resume', { pattern: pausedBy(t.eventType)! }, 'Resume')}`}</td></tr>`)}</tbody></table>`
}

export interface DeadFilter {
  type: string
  since: string
}

export function deadPage(ctx: PageContext, filter: DeadFilter, events: DeadEvent[], limit: number): Html {
  const filterFields = { type: filter.type, since: filter.since }
  return html`<form method="get" action="/dead" class="filter"><label>type <input name="type" value="${filter.type}" placeholder="billing.* or *"></label>
<label>died within <input name="since" value="${filter.since}" placeholder="2h"></label> <button>Filter</button></form>
${events.length === 0 ? html`<p class="muted">no dead event matches</p>` : html`
<form method="post" id="selected"><table><thead><tr><th><input type="checkbox" data-select-all aria-label="select all"></th><th>id</th><th>event type</th><th>entity id</th><th class="num">attempts</th><th>dead at</th><th>last error</th></tr></thead><tbody>
${events.map((e) => html`<tr data-dead="${e.id}"><td><input type="checkbox" name="id" value="${e.id}" aria-label="select ${e.id}"></td><td><a href="/dead/${e.id}">${e.id}</a></td><td><code>${e.event_type}</code></td><td>${e.entity_id}</td>
<td class="num">${e.attempts}</td><td>${e.dead_at.toISOString()}</td><td class="error-text">${oneLine(e.last_error ?? '')}</td></tr>`)}</tbody></table>
${events.length === limit ? html`<p class="muted">the ${limit} most recent shown; the actions by filter reach them all</p>` : ''}
<p><button formaction="/actions/replay-dead"${ctx.signedIn ? '' : html` disabled`}>Replay selected</button> <button class="danger" formaction="/actions/delete-dead"${ctx.signedIn ? '' : html` disabled`}>Delete selected</button></p></form>
<p>Every dead event matching the filter: ${actionForm(ctx, '/actions/replay-dead', { ...filterFields, all: '1' }, 'Replay all matching')} ${actionForm(ctx, '/actions/delete-dead', { ...filterFields, all: '1' }, 'Delete all matching', true)}</p>`}`
}

export function deadDetailPage(ctx: PageContext, event: DeadEventDetail | undefined, showPayloads: boolean): Html {
  if (event === undefined) return html`<p>This event is not dead (any more): it was replayed or deleted.</p><p><a href="/dead">all dead events</a></p>`
  return html`<dl class="detail"><dt>id</dt><dd>${event.id}</dd><dt>event id</dt><dd>${event.event_id}</dd><dt>event type</dt><dd><code data-field="event_type">${event.event_type}</code></dd>
<dt>entity</dt><dd>${event.entity_type} ${event.entity_id}</dd><dt>attempts</dt><dd>${event.attempts}</dd><dt>created at</dt><dd>${event.created_at.toISOString()}</dd><dt>dead at</dt><dd>${event.dead_at.toISOString()}</dd></dl>
<h2>Last error</h2><pre class="error-text" data-field="last_error">${event.last_error ?? '-'}</pre>
<h2>Metadata</h2><pre>${JSON.stringify(event.metadata, null, 2)}</pre>
<h2>Payload</h2>${showPayloads ? html`<pre data-field="payload">${JSON.stringify(event.payload, null, 2)}</pre>` : html`<p class="muted">hidden: start the console with --show-payloads to see payloads (they can hold personal data)</p>`}
<p>${actionForm(ctx, '/actions/replay-dead', { id: event.id }, 'Replay this event')} ${actionForm(ctx, '/actions/delete-dead', { id: event.id }, 'Delete this event', true)}</p>`
}

export function replicasPage(ctx: PageContext): Html {
  const s = ctx.status
  if (s === undefined || s.replicas.length === 0) return html`<p class="muted">no outbox-poller connection to this database</p>`
  const since = (date: Date | null) => (date === null ? '-' : seconds(Math.max(0, (s.at.getTime() - date.getTime()) / 1000)))
  return html`<p class="muted">from pg_stat_activity at ${s.at.toISOString()}: every connection named outbox-poller/&lt;host&gt;/&lt;pid&gt;/&lt;role&gt;</p>
<table><thead><tr><th>host</th><th class="num">client pid</th><th>role</th><th class="num">server pid</th><th>state</th><th>for</th></tr></thead><tbody>
${s.replicas.map((r) => {
  const [, host = '-', pid = '-'] = r.applicationName.split('/')
  return html`<tr data-replica="${r.pid}"><td>${host}</td><td class="num">${pid}</td><td>${r.role}</td><td class="num">${r.pid}</td><td>${r.state ?? '-'}</td><td>${since(r.since)}</td></tr>`
})}</tbody></table>`
}

export function capturesPage(ctx: PageContext, tables: CapturedTable[]): Html {
  const lost = ctx.status?.lostCaptures ?? []
  return html`${lost.map((l) => html`<p class="error">${l.table} ${l.reason}; capture it again: <code>${l.recapture.command}</code></p>`)}
${tables.length === 0 ? html`<p class="muted">no table is captured</p>` : html`<table><thead><tr><th>table</th><th>entity</th><th>key</th><th>events</th><th>ignored columns</th><th>columns</th><th>excluded columns</th><th>soft delete</th><th>group by</th></tr></thead><tbody>
${tables.map((t) => html`<tr><td><code>${t.table}</code></td><td>${t.entity}</td><td>${t.key}</td><td>${t.events.join(', ')}</td><td>${t.ignoreColumns.join(', ') || '-'}</td><td>${t.columns.join(', ') || 'all'}</td><td>${t.excludeColumns.join(', ') || '-'}</td><td>${t.softDeleteColumn ?? '-'}</td><td>${t.groupBy ?? '-'}</td></tr>`)}</tbody></table>`}`
}

export function tailPage(_ctx: PageContext, type: string): Html {
  return html`<form method="get" action="/tail" class="filter"><label>type <input name="type" value="${type}" placeholder="billing.* or *"></label> <button>Filter</button></form>
<p class="muted">events as they are processed (newest first), pushed by the console every second</p>
<table data-tail="${type}"><thead><tr><th>id</th><th>event type</th><th>entity id</th><th class="num">attempts</th><th>processed at</th><th class="num">latency</th></tr></thead><tbody></tbody></table>`
}

/** Off loopback, reading needs the token too. */
export function loginPage(failed: boolean): Html {
  return html`${failed ? html`<p class="error">wrong token</p>` : ''}
<form method="post" action="/login" class="login"><label>token <input type="password" name="token" autocomplete="current-password" required autofocus></label> <button>Sign in</button></form>
<p class="muted">The token (from --token-file or OUTBOX_POLLER_CONSOLE_TOKEN) is sent once; the browser then keeps an HttpOnly, SameSite=Strict cookie.</p>`
}

/** An action that would change more than the limit: the same form again, with the count confirmed. */
export function confirmPage(description: string, count: number, action: string, fields: Array<[string, string]>, back: string): Html {
  return html`<p class="warning">${description}: <strong data-field="count">${count}</strong> events. Confirm?</p>
<form method="post" action="${action}">${fields.map(([name, value]) => html`<input type="hidden" name="${name}" value="${value}">`)}<input type="hidden" name="confirm" value="${count}">
<button class="danger">Yes, ${description.toLowerCase()}: ${count} events</button> <a href="${back}">cancel</a></form>`
}

export function resultPage(message: string, back: string): Html {
  return html`<p class="ok-text" data-result>${message}</p><p><a href="${back}">back</a></p>`
}

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, ' ')
  return flat.length > 160 ? `${flat.slice(0, 159)}…` : flat
}
