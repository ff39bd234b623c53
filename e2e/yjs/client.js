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

// Editors that append their own numbered tokens (`<name><n>`) to the array `log` every
// `every` ms for `ms` ms, whatever their connection is doing (y-websocket keeps edits made while
// disconnected and sends them on reconnect); then every editor must hold every token of every
// editor, in the same order. `editors`: [[name, url], ...]. `onClose(editor, event)` may steer a
// reconnect (set `provider.serverUrl`), as a load balancer would.
async function editLog ({ editors, doc, ms, every }, onClose = () => {}) {
  const eds = editors.map(([name, url]) => {
    const c = open(url, doc, { disableBc: true })
    c.name = name
    c.made = 0
    c.log = c.ydoc.getArray('log')
    c.provider.on('connection-close', (event) => { if (event) onClose(c, event) })
    return c
  })
  for (const c of eds) await synced(c)
  out({ at: 'editing' })
  const end = Date.now() + ms
  while (Date.now() < end) {
    for (const c of eds) c.log.push([c.name + c.made++])
    await sleep(every)
  }
  const want = eds.reduce((n, c) => n + c.made, 0)
  const same = () => eds.every((c) => c.provider.synced && c.log.length === want &&
    c.log.toArray().join() === eds[0].log.toArray().join())
  try {
    await until('every editor holds every token', same, 60000)
  } catch (e) {
    throw new Error(e.message + ': ' + JSON.stringify(eds.map((c) => [c.name, c.made, c.log.length, c.provider.synced])))
  }
  // Every token once: nothing lost, nothing duplicated.
  const tokens = eds[0].log.toArray()
  const missing = eds.flatMap((c) => [...Array(c.made).keys()].map((i) => c.name + i))
    .filter((t) => !tokens.includes(t))
  const result = {
    length: tokens.length,
    made: Object.fromEntries(eds.map((c) => [c.name, c.made])),
    closes: Object.fromEntries(eds.map((c) => [c.name, c.provider.closes])),
    missing,
    unique: new Set(tokens).size
  }
  close(...eds)
  return result
}

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
  // Two or more editors append tokens for `ms` ms (see editLog) while the test disturbs the
  // gateways or NATS.
  async editlog (args) {
    return editLog(args)
  },
  // editLog where an editor closed with `drainCode` reconnects to `failover` (its pod is
  // draining: the Service sends the reconnect to another pod).
  async drain (args) {
    return editLog(args, (c, event) => {
      if (event.code === args.drainCode) c.provider.serverUrl = args.failover
    })
  },
  // Connect, sync, report the array `log`.
  async readlog ({ url, doc }) {
    const a = open(url, doc, { disableBc: true })
    await synced(a)
    const log = a.ydoc.getArray('log').toArray()
    close(a)
    return { length: log.length, log }
  },
  // A (on urlA) is seen by B (on urlB); the test then kills A's pod. B must see A's state
  // removed by a message from the gateway (not by its own 30 s awareness timeout) while B stays
  // connected; a newcomer on B then does not see A.
  async crash ({ urlA, urlB, doc }) {
    const a = open(urlA, doc, { disableBc: true })
    const b = open(urlB, doc, { disableBc: true })
    await synced(a); await synced(b)
    a.provider.awareness.setLocalStateField('user', { name: 'ann' })
    const annId = a.ydoc.clientID
    await until('A seen at B', () => b.provider.awareness.getStates().has(annId), 10000)
    let removedBy = null
    b.provider.awareness.on('update', ({ removed }, origin) => {
      if (removed.includes(annId) && removedBy === null) {
        removedBy = origin === 'timeout' ? 'client timeout' : origin === b.provider ? 'gateway' : String(origin)
      }
    })
    out({ at: 'seen' })
    const t0 = Date.now()
    await until('A removed at B', () => removedBy !== null, 40000)
    const removedAfterMs = Date.now() - t0
    const c = open(urlB, doc, { disableBc: true })
    await synced(c)
    await sleep(500)
    const newcomerSeesA = c.provider.awareness.getStates().has(annId)
    const result = { removedBy, removedAfterMs, bCloses: b.provider.closes, newcomerSeesA }
    close(a, b, c)
    return result
  },
  // One editor alone on its document for `ms` (of its own clock: see fastclock.js), with an
  // awareness state as every y-websocket editor has: how often was it disconnected (by the
  // server, or by y-websocket's own watchdog when nothing arrived for 30 s)?
  // A raw relay room (`relay: true`) never syncs a lone editor: wait for the connection only.
  async lone ({ url, doc, ms, relay }) {
    const a = open(url, doc, { disableBc: true })
    let disconnects = 0
    let messages = 0
    a.provider.on('connection-close', () => { disconnects++ })
    // Of its clock: 20 s of real time at 5x.
    if (relay) await until('connected', () => a.provider.wsconnected, 100000)
    else await synced(a, 100000)
    a.provider.ws.addEventListener('message', () => { messages++ })
    a.provider.awareness.setLocalStateField('user', { name: 'alone' })
    const t0 = Date.now()
    // Timers run on the event loop's monotonic clock, Date.now on the wall clock: a timer can
    // fire a real millisecond (FAST_CLOCK of this clock's) before Date.now shows `ms` passed.
    while (Date.now() - t0 < ms) await sleep(ms - (Date.now() - t0))
    const result = { disconnects, messages, elapsedMs: Date.now() - t0, synced: a.provider.synced }
    close(a)
    return result
  },
  // `n` editors with a name each on one document (y-websocket sends every awareness change it
  // receives back to the server); then one leaves. Reports the closes and, for each editor
  // that stayed, how many named editors it sees.
  async crowd ({ url, doc, n }) {
    const eds = []
    for (let i = 0; i < n; i++) eds.push(open(url, doc, { disableBc: true }))
    for (const c of eds) await synced(c)
    eds.forEach((c, i) => c.provider.awareness.setLocalStateField('user', { name: 'u' + i }))
    const named = (c) => [...c.provider.awareness.getStates().values()].filter((s) => s.user).length
    await until('everyone sees everyone', () => eds.every((c) => named(c) === n), 20000)
    close(eds[0])
    const rest = eds.slice(1)
    await until('the leaver gone', () => rest.every((c) => named(c) === n - 1), 10000)
    await sleep(1000) // anything else removed would be gone by now
    const seen = rest.map(named)
    const closes = eds.flatMap((c) => c.provider.closes)
    close(...rest)
    return { seen, closes }
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
