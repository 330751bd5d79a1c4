// outbox-poller console: refreshes the overview and its charts in place, runs the live tail, and the
// dead list's select-all box. Text is always set with textContent: nothing from the server becomes markup.
'use strict'

const svgNs = 'http://www.w3.org/2000/svg'

function seconds(value) {
  if (value === null || value === undefined) return '-'
  return `${Number(value.toFixed(value < 1 ? 3 : value < 10 ? 2 : 0))} s`
}

function drawChart(svg, points, field) {
  while (svg.firstChild) svg.removeChild(svg.firstChild)
  const values = points.map((p) => ({ at: p.at, v: p[field] })).filter((p) => p.v !== null && p.v !== undefined)
  const width = 600
  const height = 120
  // the last hour, or less while the console has not sampled that long: the line always spans the chart
  const end = points.length > 0 ? points[points.length - 1].at : Date.now()
  const start = Math.max(end - 3600_000, points.length > 0 ? points[0].at : end)
  const span = Math.max(1, end - start)
  const max = Math.max(0, ...values.map((p) => p.v))
  const x = (at) => ((at - start) / span) * width
  const y = (v) => height - 14 - (max === 0 ? 0 : (v / max) * (height - 24))
  const label = document.createElementNS(svgNs, 'text')
  label.setAttribute('x', '4')
  label.setAttribute('y', '12')
  label.textContent = `max ${Number(max.toPrecision(3))} · last ${span < 120_000 ? `${Math.round(span / 1000)} s` : `${Math.round(span / 60_000)} min`}`
  svg.appendChild(label)
  if (values.length === 0) return
  const line = document.createElementNS(svgNs, 'polyline')
  line.setAttribute('points', values.map((p) => `${x(p.at).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '))
  svg.appendChild(line)
  svg.dataset.points = String(values.length)
  svg.dataset.last = String(values[values.length - 1].v)
}

async function refreshOverview() {
  const response = await fetch('/api/overview', { credentials: 'same-origin' })
  if (!response.ok) return
  const { status, points } = await response.json()
  if (status) {
    const fields = {
      pending: status.pending, due: status.due, retrying: status.retrying, suspect: status.suspect, paused: status.paused,
      dead: status.dead, processedLastMinute: status.processedLastMinute, lag: seconds(status.oldestPendingSeconds),
      p50: seconds(status.latency.p50), p95: seconds(status.latency.p95), p99: seconds(status.latency.p99), at: status.at,
    }
    const layout = status.layout
    if (layout && layout.partitionBy !== null) {
      Object.assign(fields, {
        partitions: layout.partitions, defaultRows: layout.defaultRows, newestEndsAt: layout.newestEndsAt ?? '-',
        partitionsAhead: layout.ahead < 0 ? `none for the current ${layout.partitionBy}` : layout.ahead,
      })
      const warnings = document.querySelector('[data-layout-warnings]')
      if (warnings) {
        while (warnings.firstChild) warnings.removeChild(warnings.firstChild)
        for (const warning of layout.warnings) {
          const line = document.createElement('p')
          line.className = 'error'
          line.textContent = warning
          warnings.appendChild(line)
        }
      }
    }
    for (const [field, value] of Object.entries(fields)) {
      const element = document.querySelector(`[data-overview] [data-field="${field}"], [data-field="${field}"]`)
      if (element) element.textContent = String(value)
    }
  }
  for (const svg of document.querySelectorAll('svg[data-chart]')) drawChart(svg, points, svg.dataset.chart)
}

function startTail(table) {
  const type = table.dataset.tail || '*'
  const body = table.querySelector('tbody')
  const source = new EventSource(`/tail/stream?type=${encodeURIComponent(type)}`)
  source.onmessage = (message) => {
    for (const event of JSON.parse(message.data)) {
      const row = document.createElement('tr')
      row.dataset.tailEvent = event.id
      const latency = (new Date(event.processed_at) - new Date(event.created_at)) / 1000
      for (const [value, numeric] of [[event.id], [event.event_type], [event.entity_id], [event.attempts, true], [event.processed_at], [seconds(latency), true]]) {
        const cell = document.createElement('td')
        cell.textContent = String(value)
        if (numeric) cell.className = 'num'
        row.appendChild(cell)
      }
      body.insertBefore(row, body.firstChild)
    }
    while (body.rows.length > 500) body.deleteRow(body.rows.length - 1)
  }
}

document.addEventListener('DOMContentLoaded', () => {
  if (document.querySelector('[data-overview]')) {
    void refreshOverview()
    setInterval(() => void refreshOverview(), 5000)
  }
  const tail = document.querySelector('table[data-tail]')
  if (tail) startTail(tail)
  const all = document.querySelector('[data-select-all]')
  if (all) all.addEventListener('change', () => {
    for (const box of document.querySelectorAll('input[name="id"]')) box.checked = all.checked
  })
})
