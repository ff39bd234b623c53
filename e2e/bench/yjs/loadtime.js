// Time for a new y-websocket editor to load a document of many updates, for the gateway
// (from JetStream, once its replica was dropped) or any y-websocket server. Not part of the
// tests; numbers are reported, not asserted.
//
//   node e2e/bench/yjs/loadtime.js '{"url":"ws://127.0.0.1:8080/docs","updates":10000,"idleMs":2500}'
//   node e2e/bench/yjs/loadtime.js '{"url":"ws://127.0.0.1:1234","updates":10000,"keep":true}'
//
// A writer makes `updates` separate updates (one array item each, one message each) and waits
// until a second editor has all of them (so the server has them). Then, without `keep`, both
// leave and the script waits `idleMs` (past the gateway's idleUnload: the next editor loads
// the document from the store); with `keep` the writer stays (a server that keeps no document
// once its editors leave, like @y/websocket-server without persistence). Reports the time from
// opening a fresh editor to it being synced with every item, the best of `repeat` tries.
'use strict'
const path = require('path')
const req = (m) => require(path.join(__dirname, '../../yjs/node_modules', m))
const Y = req('yjs')
const { WebsocketProvider } = req('y-websocket')
const WebSocket = req('ws')

const a = JSON.parse(process.argv[2] || '{}')
const url = a.url; const updates = a.updates || 10000; const idleMs = a.idleMs ?? 2500
const repeat = a.repeat || 3
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const until = async (c, ms = 300000) => { const end = Date.now() + ms; while (!c()) { if (Date.now() > end) throw new Error('timeout'); await sleep(2) } }
const open = (doc) => {
  const ydoc = new Y.Doc()
  const p = new WebsocketProvider(url, doc, ydoc, { WebSocketPolyfill: WebSocket, disableBc: true })
  return { ydoc, p, arr: ydoc.getArray('a') }
}
const close = (...cs) => cs.forEach((c) => { c.p.destroy(); c.ydoc.destroy() })

async function main () {
  const doc = (a.doc || 'load') + '-' + Date.now()
  const w = open(doc)
  const check = open(doc)
  await until(() => w.p.synced && check.p.synced)
  const t0 = Date.now()
  for (let i = 0; i < updates; i++) {
    w.arr.push([i]) // one transaction, one update message
    if (i % 50 === 49) await sleep(1)
  }
  await until(() => check.arr.length === updates)
  const writeMs = Date.now() - t0
  close(check)
  if (!a.keep) close(w)
  const loads = []
  for (let r = 0; r < repeat; r++) {
    if (!a.keep) await sleep(idleMs)
    const t1 = Date.now()
    const c = open(doc)
    await until(() => c.p.synced && c.arr.length === updates)
    loads.push(Date.now() - t1)
    close(c)
  }
  if (a.keep) close(w)
  console.log(JSON.stringify({ updates, write_ms: writeMs, load_ms_best: Math.min(...loads), load_ms: loads }))
  process.exit(0)
}
main().catch((e) => { console.error(e); process.exit(1) })
