// Node `ws` room server: members (`?role=member`, the default) sit in one Set; every message a
// publisher (`?role=pub`) sends is broadcast to all members with `ws.send`. This is the
// hand-written baseline a team would build without a gateway.
// Usage: node ws-room.js [port]. Prints `listening <port>`.
'use strict';
const { WebSocketServer } = require('ws');

const members = new Set();
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(process.argv[2] || 0),
  perMessageDeflate: false,
  clientTracking: false,
  backlog: 4096,
});
wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  const role = new URL(req.url, 'http://localhost').searchParams.get('role');
  if (role === 'pub') {
    ws.on('message', (data, isBinary) => {
      for (const m of members) m.send(data, { binary: isBinary });
    });
  } else {
    members.add(ws);
    ws.on('close', () => members.delete(ws));
  }
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
