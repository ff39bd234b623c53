// Sanity check with the official socket.io-client: the room server relays a publish to a member.
// The benchmark's load generator speaks the Socket.IO v4 wire protocol itself (so every peer is
// driven by the same client); this proves the server side works with the real client.
// Usage: node sio-check.js <port>. Exits 0 on success.
'use strict';
const { io } = require('socket.io-client');

const url = `http://127.0.0.1:${process.argv[2]}`;
const opts = (role) => ({ transports: ['websocket'], query: { role }, reconnection: false });
const member = io(url, opts('member'));
const timer = setTimeout(() => { console.error('sio-check: timed out'); process.exit(1); }, 5000);
member.on('connect', () => {
  const pub = io(url, opts('pub'));
  pub.on('connect', () => setTimeout(() => pub.emit('pub', 'hello'), 100));
  member.on('m', (d) => {
    if (d !== 'hello') { console.error(`sio-check: got ${d}`); process.exit(1); }
    clearTimeout(timer);
    console.log('sio-check ok');
    member.close(); pub.close();
    process.exit(0);
  });
});
