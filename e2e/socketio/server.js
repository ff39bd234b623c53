// Two Socket.IO server instances (one process, two `http` servers, no adapter between them), for
// gateway/tests/socketio.rs. Usage: node server.js PORT_A PORT_B
// Each instance: acks every `msg` with its own name; every client joins the room `everyone`;
// `shout` broadcasts `news` to that room (on this instance only: there is no adapter).
// `GET /stats` answers `{"connectionErrors": {"<engine.io message>": count}}` (e.g. "Session ID
// unknown": a request of a session this instance never created).
// Prints one JSON line `{"event":"ready"}` when both listen; runs until killed.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

function instance(name, port) {
  const connectionErrors = {};
  const httpServer = http.createServer((req, res) => {
    if (req.url === "/stats") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ connectionErrors }));
    }
  });
  const io = new Server(httpServer, { cors: { origin: true } });
  io.engine.on("connection_error", (err) => {
    connectionErrors[err.message] = (connectionErrors[err.message] || 0) + 1;
  });
  io.on("connection", (socket) => {
    socket.join("everyone");
    socket.on("msg", (n, ack) => ack({ instance: name, n }));
    socket.on("shout", (from, ack) => {
      io.to("everyone").emit("news", { instance: name, from });
      ack({ instance: name });
    });
  });
  return new Promise((resolve) => httpServer.listen(port, "127.0.0.1", resolve));
}

const [a, b] = process.argv.slice(2).map(Number);
Promise.all([instance("a", a), instance("b", b)]).then(() =>
  console.log(JSON.stringify({ event: "ready" })),
);
