// WebSocket echo app (the upstream of the proxy benchmarks, and the "Node ws" idle-memory peer).
// Usage: node echo.js [port]   (port 0 or unset: any free port). Prints `listening <port>`.
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(process.argv[2] || 0),
  perMessageDeflate: false,
  clientTracking: false,
  backlog: 4096,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
