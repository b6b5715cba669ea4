"use strict"
// Peer: Node's socket.io server (npm socket.io), what users would pick instead of Switchboard.
// The same events as servers/socketio_server.py: `join` (ack) enters a room, `shout` is
// emitted to the whole room (sender included), `ping` acks its payload back. Default settings
// except a larger listen backlog, so thousands of clients can connect at once.
//
// With `--presence`, a join also does the work Switchboard's presence does, written as a
// socket.io user would on one node: the joiner gets the room's member list
// (`presence_state`, itself included) and every other member a `presence_diff` naming the
// joiner; a disconnect sends the room a `presence_diff` with the leave. It is there to tell
// apart what presence costs from what the server around it costs.
//
//   node loadtest/bench/servers/socketio_node_server.js --host 127.0.0.1 --port 4103 [--presence]

const http = require("http")
const {Server} = require("socket.io")

function option(name, fallback){
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : fallback
}

const server = http.createServer()
const io = new Server(server)

const presence = process.argv.includes("--presence")
const members = new Map()  // room -> Map(socket id -> {metas: [meta]})

function track(socket, room){
  let present = members.get(room)
  if(!present){ members.set(room, present = new Map()) }
  const entry = {metas: [{online_at: Date.now(), phx_ref: socket.id}]}
  present.set(socket.id, entry)
  socket.emit("presence_state", Object.fromEntries(present))
  socket.to(room).emit("presence_diff", {joins: {[socket.id]: entry}, leaves: {}})
  socket.on("disconnect", () => {
    present.delete(socket.id)
    if(present.size === 0){ members.delete(room) }
    io.to(room).emit("presence_diff", {joins: {}, leaves: {[socket.id]: entry}})
  })
}

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room)
    if(presence){ track(socket, room) }
    if(ack){ ack("ok") }
  })
  socket.on("shout", (data) => { io.to((data && data.room) || "bench").emit("shout", data) })
  socket.on("ping", (data, ack) => { if(ack){ ack(data) } })
})

server.listen({host: option("host", "127.0.0.1"), port: Number(option("port", 4103)), backlog: 4096})
for(const signal of ["SIGTERM", "SIGINT"]){
  process.on(signal, () => { io.close(); process.exit(0) })
}
