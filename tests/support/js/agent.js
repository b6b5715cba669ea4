"use strict"
// A Node process holding phoenix.js clients, driven by JSON lines on stdin; it reports every
// callback as one JSON line on stdout, so the Python side (tests/support/phoenix_agent.py)
// waits on events instead of sleeping. Used by tests/presence and tests/cluster.
//
// Usage: node agent.js <endpoint>   e.g. ws://127.0.0.1:4000/socket (a node, or the nginx in
// front of a cluster)
//
// Each command names a client (`id`): one phoenix.js Socket (Node `ws` transport) with its
// channels, each with its `Presence`. A client given `addr` binds its WebSocket to that
// loopback source address (127.0.0.N), so nginx's `hash $remote_addr consistent` spreads
// clients over the nodes as it would spread real ones.
// Commands (`topic` one of the client's channels):
//   {op: "connect", id, token, addr?, reconnect?, params?}  -> open; reconnect: false turns
//                                            off reconnects and rejoins (default backoff
//                                            otherwise); params replaces {token}
//   {op: "join", id, topic, payload?, events?, recover?}  channel + Presence; shouts are
//                                            recorded, and every event named in `events` as a
//                                            message. recover: the README's recovery client:
//                                            params are a function giving {since: last}, last
//                                            is the ref of the latest message (channel.on),
//                                            or the join reply's position if not recovered
//   {op: "leave", id, topic}                 -> {ev: "left", id, topic, status}
//   {op: "push", id, topic, event, payload, seq}   -> {ev: "reply", seq, status, response}
//   {op: "shout_every", id, topic, ms, from} numbered shouts {from, n: 1, 2, ...} every ms
//   {op: "stop_shouting", id}                -> {ev: "shouting_stopped", id, last}
//   {op: "list", id, topic, seq}             -> {ev: "list", seq, list: [{key, metas}]}
//   {op: "disconnect", id}                   socket.disconnect(): close frame, no phx_leave
//   {op: "destroy", id}                      destroy the TCP connection: no close frame at all
//   {op: "drop", id, ms}                     destroy it and stay away `ms` before reconnecting
//   {op: "exit"}                             exit at once
// Events: open {conn}, close {code, reason}, error, join {topic, status, response, joinRef}
// (every join and rejoin), message {topic, event, payload, ref} for the `events` of a join,
// shout {topic, from, n, joinRef, ref}, presence_join / presence_leave
// {topic, key, current, joined|left}, sync {topic, list}, frame {conn, dir: "in", topic,
// event, joinRef, data} for every presence_state and presence_diff frame received (before
// phoenix.js sees it; `data` is the payload), agent_error. The process exits when stdin closes.

const readline = require("readline")
const WebSocket = require("ws")
const {Socket, Presence} = require("phoenix")

const endpoint = process.argv[2]
const clients = new Map()
const t0 = Date.now()
const RECONNECT_MS = [10, 50, 100, 150, 200, 250, 500, 1000, 2000]  // phoenix.js's default

function emit(event){
  process.stdout.write(JSON.stringify({t: Date.now() - t0, ...event}) + "\n")
}

function listOf(presence){
  return presence.list((key, pres) => ({key, metas: pres.metas}))
}

/** A `ws` WebSocket (bound to `addr` if given) that reports presence frames before phoenix.js
 * sees them. */
function recordingTransport(id, addr){
  let connections = 0
  return class RecordingWebSocket extends WebSocket {
    constructor(url, protocols){
      super(url, protocols, addr ? {localAddress: addr} : {})
      this._conn = ++connections
      this.on("message", (data, isBinary) => {
        if(isBinary){ return }
        const frame = JSON.parse(data.toString("utf8"))
        if(frame[3] === "presence_state" || frame[3] === "presence_diff"){
          emit({ev: "frame", id, conn: this._conn, dir: "in", topic: frame[2], event: frame[3], joinRef: frame[0], data: frame[4]})
        }
      })
    }
  }
}

function client(id){
  const found = clients.get(id)
  if(!found){ throw new Error(`no client ${id}`) }
  return found
}

function channelOf(id, topic){
  const found = client(id).channels.get(topic)
  if(!found){ throw new Error(`client ${id} has no channel ${topic}`) }
  return found
}

const commands = {
  connect({id, token, addr, reconnect = true, params}){
    const state = {socket: null, channels: new Map(), shouter: null, offlineUntil: 0}
    const options = {
      transport: recordingTransport(id, addr),
      params: params || {token},
      reconnectAfterMs: tries =>
        Math.max(state.offlineUntil - Date.now(), RECONNECT_MS[tries - 1] || 5000),
    }
    if(!reconnect){
      // A test that drops a connection wants the client gone, not back a moment later.
      options.reconnectAfterMs = () => 600000
      options.rejoinAfterMs = () => 600000
    }
    const socket = new Socket(endpoint, options)
    let opened = 0
    socket.onOpen(() => emit({ev: "open", id, conn: ++opened}))
    socket.onClose(event => emit({ev: "close", id, code: event.code, reason: String(event.reason || "")}))
    socket.onError(error => emit({ev: "error", id, message: String(error && error.message || error)}))
    state.socket = socket
    clients.set(id, state)
    socket.connect()
  },

  join({id, topic, payload, events = [], recover = false}){
    const {socket, channels} = client(id)
    let last = null  // the README's recovery client: the position of the latest message
    const params = recover ? () => (last ? {since: last} : {}) : (payload || {})
    const channel = socket.channel(topic, params)
    const presence = new Presence(channel)
    presence.onJoin((key, current, joined) =>
      emit({ev: "presence_join", id, topic, key, current: current || null, joined}))
    presence.onLeave((key, current, left) =>
      emit({ev: "presence_leave", id, topic, key, current, left}))
    presence.onSync(() => emit({ev: "sync", id, topic, list: listOf(presence)}))
    channel.on("shout", (payload, ref) => {
      if(recover){ last = ref }
      emit({ev: "shout", id, topic, from: payload.from, n: payload.n, joinRef: channel.joinRef(), ref})
    })
    for(const event of events){
      channel.on(event, (message, ref) => {
        if(recover){ last = ref }
        emit({ev: "message", id, topic, event, payload: message, ref})
      })
    }
    channels.set(topic, {channel, presence})
    // The hooks stay on the join push, so they fire again on every rejoin.
    const reply = status => response => {
      if(recover && status === "ok" && !response.recovered){ last = response.position }
      emit({ev: "join", id, topic, status, response, joinRef: channel.joinRef()})
    }
    channel.join().receive("ok", reply("ok")).receive("error", reply("error")).receive("timeout", reply("timeout"))
  },

  leave({id, topic}){
    const {channel} = channelOf(id, topic)
    const reply = status => () => emit({ev: "left", id, topic, status})
    channel.leave().receive("ok", reply("ok")).receive("timeout", reply("timeout"))
    client(id).channels.delete(topic)
  },

  push({id, topic, event, payload, seq}){
    const {channel} = channelOf(id, topic)
    const reply = status => response => emit({ev: "reply", id, topic, seq, status, response})
    channel.push(event, payload || {}).receive("ok", reply("ok")).receive("error", reply("error")).receive("timeout", reply("timeout"))
  },

  shout_every({id, topic, ms, from}){
    const state = client(id)
    const {channel} = channelOf(id, topic)
    let n = 0
    state.shouter = {timer: setInterval(() => channel.push("shout", {from, n: ++n}), ms), last: () => n}
  },

  stop_shouting({id}){
    const state = client(id)
    clearInterval(state.shouter.timer)
    emit({ev: "shouting_stopped", id, last: state.shouter.last()})
    state.shouter = null
  },

  list({id, topic, seq}){
    const {presence} = channelOf(id, topic)
    emit({ev: "list", id, topic, seq, list: listOf(presence)})
  },

  disconnect({id}){
    client(id).socket.disconnect()
  },

  destroy({id}){
    client(id).socket.conn._socket.destroy()  // ws keeps its net.Socket here
  },

  drop({id, ms}){
    const state = client(id)
    state.offlineUntil = Date.now() + ms
    state.socket.conn._socket.destroy()
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
