// Runs a client.js scenario with the clock of yjs, y-protocols and y-websocket sped up
// FAST_CLOCK times (default 1): Date.now, setTimeout and setInterval are scaled before those
// modules load (lib0 takes Date.now at load). y-websocket's 30 s "no message received"
// watchdog and y-protocols' 15 s awareness renewal then run FAST_CLOCK times faster, against a
// gateway whose own timing is real. Used by the lone-editor test (documents.rs); the same
// scenario with FAST_CLOCK=1 is the real-time check.
// Usage: FAST_CLOCK=10 node fastclock.js <scenario> <json-args>
'use strict'
const k = Number(process.env.FAST_CLOCK || '1')
if (!(k >= 1)) throw new Error('FAST_CLOCK must be a number >= 1')
const realNow = Date.now.bind(Date)
const t0 = realNow()
Date.now = () => Math.floor(t0 + (realNow() - t0) * k)
const realSetTimeout = global.setTimeout
const realSetInterval = global.setInterval
global.setTimeout = (f, ms, ...args) => realSetTimeout(f, (ms || 0) / k, ...args)
global.setInterval = (f, ms, ...args) => realSetInterval(f, (ms || 0) / k, ...args)
require('./client.js')
