// Socket.IO room server: members (`?role=member`) join room `fan` on connect; a publisher
// (`?role=pub`) emits `pub` events, which the server relays with `io.to('fan').emit('m', data)`.
// WebSocket transport only, no compression (same wire conditions as the other peers).
// Usage: node sio-room.js [port]. Prints `listening <port>`.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const srv = http.createServer();
const io = new Server(srv, {
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
});
io.on('connection', (socket) => {
  if (socket.handshake.query.role === 'pub') {
    socket.on('pub', (d) => io.to('fan').emit('m', d));
  } else {
    socket.join('fan');
  }
});
srv.listen(Number(process.argv[2] || 0), '127.0.0.1', 4096, () =>
  console.log(`listening ${srv.address().port}`));
process.on('SIGTERM', () => process.exit(0));
