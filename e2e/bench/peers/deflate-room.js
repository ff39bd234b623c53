// Compression load client: `members` clients join a Switchboard room over the JSON protocol with
// the `ws` client's permessage-deflate offer (the one browsers make:
// `permessage-deflate; client_max_window_bits`), and inflate what they receive; one publisher
// sends `messages` JSON chat messages of ~1-2 KiB. The publisher offers no deflate: `ws` would
// compress its publishes one after another on this same busy process, spreading a burst out
// so that the gateway's compressed and uncompressed runs would not get the same burst. Node's
// `ws` is used because it negotiates and inflates RFC 7692 correctly; the Rust load generator's
// client library has no deflate.
//
// Usage: node deflate-room.js <port> <path> <room> <members> <messages> [paceMs]
// (paceMs > 0: one publish every paceMs instead of a burst, so nothing queues at the gateway.)
// Prints `ready <negotiated extensions of the first member>`, waits for `go` on stdin, publishes,
// and prints `done <json>` with deliveries, bytes read from the sockets (frames as sent on the
// wire, compressed or not) and the mean inflated size of a delivery.
'use strict';
const readline = require('readline');
const WebSocket = require('ws');

const [port, path, room, members, messages, paceMs] = process.argv.slice(2);
const PACE = Number(paceMs || 0);
const N = Number(members);
const M = Number(messages);
const url = `ws://127.0.0.1:${port}${path}`;
const open = (perMessageDeflate = true) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, 'switchboard.v1', { perMessageDeflate });
  ws.once('error', reject);
  ws.once('open', () => resolve(ws));
});

// Chat-like text: words from a small vocabulary picked by a fixed LCG, so every run sends the
// same bytes and they compress like prose, not like a repeated character.
const WORDS = ('the gateway room message user team deploy review merge release build test ' +
  'latency socket frame client server window compress inflate queue member publish join ' +
  'meeting lunch today tomorrow thanks please check this link ok great issue fix').split(' ');
let seed = 12345;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
function chat(i) {
  const words = [];
  const len = 900 + rnd(900);
  let size = 0;
  while (size < len) { const w = WORDS[rnd(WORDS.length)]; words.push(w); size += w.length + 1; }
  return { id: `m${i}`, user: `user${rnd(500)}`, avatar: `https://cdn.example.com/a/${rnd(99999)}.png`,
    sentAt: 1764892800000 + i * 1000, text: words.join(' '), mentions: [`user${rnd(500)}`],
    reactions: { thumbsup: rnd(9), heart: rnd(5) } };
}

async function main() {
  const socks = [];
  for (let i = 0; i < N; i += 64) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 64); j++) batch.push(open());
    socks.push(...await Promise.all(batch));
  }
  let got = 0;
  let inflated = 0;
  let joinedAll;
  const joined = new Promise((r) => { joinedAll = r; });
  let joins = 0;
  let doneAll;
  const done = new Promise((r) => { doneAll = r; });
  for (const ws of socks) {
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.includes('"type":"message"')) {
        got++;
        inflated += Buffer.byteLength(text);
        if (got === N * M) doneAll();
      } else if (text.includes('"joined"')) {
        if (++joins === N) joinedAll();
      }
    });
    ws.send(JSON.stringify({ type: 'join', room, id: 'j' }));
  }
  await joined;
  const pub = await open(false);
  pub.on('message', () => {});
  const frames = [];
  for (let i = 0; i < M; i++) frames.push(JSON.stringify({ type: 'publish', room, data: chat(i) }));
  console.log(`ready ${socks[0].extensions || '(none)'}`);
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() !== 'go') continue;
    const read0 = socks.reduce((a, ws) => a + ws._socket.bytesRead, 0);
    const t0 = Date.now();
    if (PACE > 0) {
      for (const f of frames) {
        pub.send(f);
        await new Promise((r) => setTimeout(r, PACE));
      }
    } else {
      for (const f of frames) pub.send(f);
    }
    await Promise.race([done, new Promise((r) => setTimeout(r, 120000))]);
    const wire = socks.reduce((a, ws) => a + ws._socket.bytesRead, 0) - read0;
    const out = { deliveries: got, expected: N * M, wire_bytes: wire,
      inflated_bytes: Math.round(inflated / Math.max(got, 1)),
      published_bytes: Math.round(frames.reduce((a, f) => a + f.length, 0) / M),
      seconds: (Date.now() - t0) / 1000, extensions: socks[0].extensions || '' };
    console.log(`done ${JSON.stringify(out)}`);
    break;
  }
  for (const ws of socks) ws.close();
  pub.close();
  setTimeout(() => process.exit(0), 500);
}
main().catch((e) => { console.error(e); process.exit(1); });
