"use strict"
// Peer: Node's socket.io server (npm socket.io), what users would pick instead of Switchboard.
// The same events as servers/socketio_server.py: `join` (ack) enters a room, `shout` is
// emitted to the whole room (sender included), `ping` acks its payload back. Default settings
// except a larger listen backlog, so thousands of clients can connect at once.
//
//   node loadtest/bench/servers/socketio_node_server.js --host 127.0.0.1 --port 4103

const http = require("http")
const {Server} = require("socket.io")

function option(name, fallback){
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : fallback
}

const server = http.createServer()
const io = new Server(server)

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => { socket.join(room); if(ack){ ack("ok") } })
  socket.on("shout", (data) => { io.to((data && data.room) || "bench").emit("shout", data) })
  socket.on("ping", (data, ack) => { if(ack){ ack(data) } })
})

server.listen({host: option("host", "127.0.0.1"), port: Number(option("port", 4103)), backlog: 4096})
for(const signal of ["SIGTERM", "SIGINT"]){
  process.on(signal, () => { io.close(); process.exit(0) })
}
