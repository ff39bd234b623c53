// Yjs document fan-out and memory, for the gateway (rooms protocol yjs) or any y-websocket
// server (e.g. @y/websocket-server). Not part of the tests; numbers are reported, not asserted.
//
//   node e2e/bench/yjs/fanout.js '{"url":"ws://127.0.0.1:8080/docs","editors":100,"updates":200,"pid":1234}'
//
// Uses e2e/yjs/node_modules (scripts/setup.sh). Opens `editors` stock WebsocketProviders on one
// document; one of them inserts `updates` timestamped characters; reports the latency from
// insert to arrival at every other editor (p50/p99, ms), and the server's RSS growth (from
// /proc/<pid>/status) per editor and, with `docs`, per open document.
'use strict'
const path = require('path')
const req = (m) => require(path.join(__dirname, '../../yjs/node_modules', m))
const Y = req('yjs')
const { WebsocketProvider } = req('y-websocket')
const WebSocket = req('ws')
const fs = require('fs')

const a = JSON.parse(process.argv[2] || '{}')
const url = a.url; const editors = a.editors || 100; const updates = a.updates || 200
const docs = a.docs || 0
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const rss = () => a.pid ? Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${a.pid}/status`, 'utf8'))[1]) * 1024 : NaN
const open = (doc) => {
  const ydoc = new Y.Doc()
  // disableBc: providers in one process would otherwise exchange updates over a
  // BroadcastChannel, not through the server.
  const p = new WebsocketProvider(url, doc, ydoc, { WebSocketPolyfill: WebSocket, disableBc: true })
  return { ydoc, p, arr: ydoc.getArray('a') }
}
const until = async (c, ms = 60000) => { const end = Date.now() + ms; while (!c()) { if (Date.now() > end) throw new Error('timeout'); await sleep(5) } }
const pct = (xs, q) => xs.sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(q * xs.length))]

async function main () {
  const doc = 'bench-' + Date.now()
  const base = rss()
  const clients = []
  for (let i = 0; i < editors; i++) clients.push(open(doc))
  await until(() => clients.every((c) => c.p.synced))
  await sleep(500)
  const perEditor = (rss() - base) / editors
  const lat = []
  for (const c of clients.slice(1)) {
    c.arr.observe((e) => {
      const now = performance.timeOrigin + performance.now()
      for (const d of e.changes.delta) for (const v of (d.insert || [])) lat.push(now - v)
    })
  }
  const writer = clients[0]
  for (let i = 0; i < updates; i++) {
    writer.arr.push([performance.timeOrigin + performance.now()])
    await sleep(10)
  }
  await until(() => lat.length >= updates * (editors - 1))
  let perDoc = NaN
  if (docs > 0) {
    const before = rss()
    const extra = []
    for (let i = 0; i < docs; i++) {
      const c = open(`${doc}-d${i}`)
      extra.push(c)
      await until(() => c.p.synced)
      c.ydoc.getText('t').insert(0, 'x'.repeat(100))
    }
    await sleep(500)
    perDoc = (rss() - before) / docs
    extra.forEach((c) => c.p.destroy())
  }
  clients.forEach((c) => c.p.destroy())
  console.log(JSON.stringify({ editors, updates, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99), rss_per_editor_bytes: perEditor, rss_per_document_bytes: perDoc }))
  process.exit(0)
}
main().catch((e) => { console.error(e); process.exit(1) })
