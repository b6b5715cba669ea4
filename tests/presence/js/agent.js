"use strict"
// A phoenix.js client agent driven by tests/presence/test_presence_phoenix_js.py.
//
// `node agent.js <endpoint>` (e.g. ws://127.0.0.1:4000/socket) reads one JSON command per
// line on stdin and writes one JSON event per line on stdout. Each command names a client
// (`id`): one phoenix.js Socket (Node `ws` transport) with at most one channel and its
// `Presence`. Every callback becomes an event, so the Python side waits on events instead
// of sleeping.
//
// Commands:
//   {op: "connect", id, token}            -> {ev: "open", id} (reconnects are disabled)
//   {op: "join", id, topic}               -> {ev: "join", id, status, response, joinRef}
//   {op: "list", id, seq}                 -> {ev: "list", id, seq, list: [{key, metas}]}
//   {op: "leave", id}                     -> {ev: "left", id, status}
//   {op: "disconnect", id}                socket.disconnect(): close frame, no phx_leave
//   {op: "destroy", id}                   destroy the TCP connection: no close frame at all
//   {op: "exit"}                          exit at once
// Events from callbacks: presence_join {key, current, joined}, presence_leave {key, current,
// left}, sync {list}, frame {dir: "in", data} for presence_state and presence_diff frames,
// close {code}, error. The process exits when stdin closes.

const readline = require("readline")
const WebSocket = require("ws")
const {Socket, Presence} = require("phoenix")

const endpoint = process.argv[2]
const clients = new Map()
const t0 = Date.now()

function emit(event){
  process.stdout.write(JSON.stringify({t: Date.now() - t0, ...event}) + "\n")
}

function listOf(presence){
  return presence.list((key, pres) => ({key, metas: pres.metas}))
}

/** A `ws` WebSocket that reports presence frames as they arrive, before phoenix.js sees them. */
function recordingTransport(id){
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols){
      super(url, protocols)
      this.on("message", (data, isBinary) => {
        if(isBinary){ return }
        const frame = JSON.parse(data.toString("utf8"))
        if(frame[3] === "presence_state" || frame[3] === "presence_diff"){
          emit({ev: "frame", id, dir: "in", data: frame})
        }
      })
    }
  }
}

const commands = {
  connect({id, token}){
    const socket = new Socket(endpoint, {
      transport: recordingTransport(id),
      params: {token},
      // A test that drops a connection wants the client gone, not back a moment later.
      reconnectAfterMs: () => 600000,
      rejoinAfterMs: () => 600000,
    })
    socket.onOpen(() => emit({ev: "open", id}))
    socket.onClose(event => emit({ev: "close", id, code: event.code}))
    socket.onError(error => emit({ev: "error", id, message: String(error && error.message || error)}))
    clients.set(id, {socket, channel: null, presence: null})
    socket.connect()
  },

  join({id, topic}){
    const client = clients.get(id)
    const channel = client.socket.channel(topic)
    const presence = new Presence(channel)
    presence.onJoin((key, current, joined) =>
      emit({ev: "presence_join", id, key, current: current || null, joined}))
    presence.onLeave((key, current, left) =>
      emit({ev: "presence_leave", id, key, current, left}))
    presence.onSync(() => emit({ev: "sync", id, list: listOf(presence)}))
    client.channel = channel
    client.presence = presence
    const reply = status => response =>
      emit({ev: "join", id, status, response, joinRef: channel.joinRef()})
    channel.join().receive("ok", reply("ok")).receive("error", reply("error")).receive("timeout", reply("timeout"))
  },

  list({id, seq}){
    const {presence} = clients.get(id)
    emit({ev: "list", id, seq, list: presence ? listOf(presence) : null})
  },

  leave({id}){
    const {channel} = clients.get(id)
    const reply = status => () => emit({ev: "left", id, status})
    channel.leave().receive("ok", reply("ok")).receive("timeout", reply("timeout"))
  },

  disconnect({id}){
    clients.get(id).socket.disconnect()
  },

  destroy({id}){
    const {socket} = clients.get(id)
    socket.conn._socket.destroy()  // ws keeps its net.Socket here
  },

  exit(){
    process.exit(0)
  },
}

const input = readline.createInterface({input: process.stdin})
input.on("line", line => {
  if(!line.trim()){ return }
  const command = JSON.parse(line)
  try {
    commands[command.op](command)
  } catch(error){
    emit({ev: "agent_error", id: command.id || null, op: command.op, message: String(error.stack || error)})
  }
})
input.on("close", () => process.exit(0))
process.on("uncaughtException", error => {
  emit({ev: "agent_error", id: null, message: String(error.stack || error)})
})
