// Stock yjs + y-websocket clients for gateway/tests/documents.rs. One scenario per run; the
// result is one JSON line on stdout. Usage: node client.js <scenario> <json-args>
'use strict'
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

const args = JSON.parse(process.argv[3] || '{}')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\n') }

function open (url, doc, opts = {}) {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(url, doc, ydoc, { WebSocketPolyfill: WebSocket, ...opts })
  provider.closes = []
  provider.on('connection-close', (event) => { if (event) provider.closes.push(event.code) })
  return { ydoc, provider, text: ydoc.getText('t') }
}

async function until (what, cond, ms = 20000) {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what)
    await sleep(5)
  }
}

const synced = (c, ms) => until('synced', () => c.provider.synced, ms)
const close = (...cs) => cs.forEach((c) => { c.provider.destroy(); c.ydoc.destroy() })

const scenarios = {
  // One editor alone: it becomes synced (the gateway answers its sync step 1).
  async first ({ url, doc }) {
    const a = open(url, doc)
    await synced(a)
    close(a)
    return { synced: true }
  },
  // Two editors (one per pod), `edits` interleaved inserts each, then both must hold the
  // same text of 2 * edits characters.
  async interleave ({ urlA, urlB, doc, edits }) {
    const a = open(urlA, doc)
    const b = open(urlB, doc)
    await synced(a); await synced(b)
    const base = a.text.length
    for (let i = 0; i < edits; i++) {
      for (const [c, ch] of [[a, 'a'], [b, 'b']]) {
        const pos = Math.floor(Math.random() * (c.text.length + 1))
        c.text.insert(pos, ch)
      }
      if (i % 50 === 0) await sleep(1)
    }
    const want = base + 2 * edits
    await until('convergence', () => a.text.length === want && b.text.length === want &&
      a.text.toString() === b.text.toString(), 60000)
    const text = a.text.toString()
    close(a, b)
    return { length: text.length, as: [...text].filter((x) => x === 'a').length, text }
  },
  // Connect, sync, report the text.
  async read ({ url, doc }) {
    const a = open(url, doc)
    await synced(a)
    const text = a.text.toString()
    close(a)
    return { length: text.length, text }
  },
  // Connect, sync, append `insert`, wait until the gateway stored it (a second editor sees it).
  async write ({ url, doc, insert }) {
    const a = open(url, doc)
    await synced(a)
    a.text.insert(a.text.length, insert)
    const b = open(url, doc)
    await until('echo through a second editor', () => b.provider.synced && b.text.toString() === a.text.toString())
    const text = a.text.toString()
    close(a, b)
    return { length: text.length, text }
  },
  // A's awareness state reaches B (a newcomer, on `urlB`) with B's first sync; A hears its own
  // awareness echoed (what keeps a lone y-websocket editor from reconnecting as idle).
  async awareness ({ urlA, urlB, doc }) {
    const a = open(urlA, doc)
    await synced(a)
    const before = a.provider.wsLastMessageReceived
    let echoed = false
    a.provider.ws.addEventListener('message', (m) => {
      const data = new Uint8Array(m.data)
      if (data[0] === 1) echoed = true
    })
    await sleep(5) // a later wsLastMessageReceived tick
    a.provider.awareness.setLocalStateField('user', { name: 'ann' })
    await until('own awareness echoed', () => echoed, 5000)
    await sleep(200) // let the state cross the bus to the other pod
    const b = open(urlB, doc)
    const t0 = Date.now()
    await until('awareness of A at B', () => [...b.provider.awareness.getStates().values()]
      .some((s) => s.user && s.user.name === 'ann'), 10000)
    const seenAfterMs = Date.now() - t0
    const bSynced = b.provider.synced
    close(a, b)
    return { echoed, refreshed: a.provider.wsLastMessageReceived >= before, seenAfterMs, bSynced }
  },
  // A read-only editor (urlRO) types; a writer (urlRW) must never see it; the writer's own
  // text reaches the reader.
  async readonly ({ urlRW, urlRO, doc }) {
    const w = open(urlRW, doc)
    const r = open(urlRO, doc)
    await synced(w); await synced(r)
    r.text.insert(0, 'READONLY')
    w.text.insert(w.text.length, 'writer')
    await until('writer text at reader', () => r.text.toString().includes('writer'))
    await sleep(500)
    const writerText = w.text.toString()
    const fresh = open(urlRW, doc)
    await synced(fresh)
    const freshText = fresh.text.toString()
    close(w, r, fresh)
    return { writerText, freshText }
  },
  // An update of `bytes` characters: the connection is closed; report the close code.
  async oversized ({ url, doc, bytes }) {
    const a = open(url, doc)
    await synced(a)
    a.text.insert(0, 'x'.repeat(bytes))
    await until('close', () => a.provider.closes.length > 0, 10000)
    const code = a.provider.closes[0]
    close(a)
    return { code }
  }
}

const run = scenarios[process.argv[2]]
if (!run) { out({ error: 'unknown scenario ' + process.argv[2] }); process.exit(2) }
run(args).then((r) => { out(r); process.exit(0) }, (e) => { out({ error: String(e) }); process.exit(1) })
