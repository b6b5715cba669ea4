"use strict"
// How the Node load generator speaks to each kind of server: Phoenix V2 (switchboard), socket.io
// (Node's or python-socketio, through the socket.io-client package) and plain WebSocket echo
// (the bare websockets server, path /echo). Each connection object has the same face:
//   open() -> Promise          the WebSocket (or socket.io connection) is up
//   join(room) -> Promise      joined; for Phoenix the ok phx_reply (presence then follows)
//   ping() -> Promise          one request answered (Phoenix "ping" reply, an ack, an echo)
//   heartbeat()                what keeps an idle connection alive, if the client must send it
//   close()
//   status                     HTTP status of a refused upgrade (0 if none)
//   closed                     true once the connection ended (closeCode: how, for ws ones)
// Phoenix connections also keep each client's view of the room's presence, key by key, as a
// bitmap over user numbers (users are "bench-<n>"): `presence.count` is the number of users
// this client currently sees, applied the way phoenix.js applies it (diffs that arrive before
// the state wait for it).

const WebSocket = require("ws")
const ioClient = require("socket.io-client")

const OPEN_TIMEOUT = 60000
const REPLY = Buffer.from('"phx_reply"')
const DIFF = Buffer.from('"presence_diff"')
const STATE = Buffer.from('"presence_state"')
const KEY = Buffer.from('"bench-')
const JOINS = Buffer.from('"joins":{')
const LEAVES = Buffer.from('"leaves":{')

class PresenceView {
  constructor(users){
    this.bits = new Uint8Array(Math.ceil(users / 8))
    this.users = users
    this.count = 0
    this.synced = false
    this.pending = []  // changes that came before the state: n for a join, ~n for a leave
    this.frames = 0
    this.unknown = 0
  }
  _user(key){
    const n = key.startsWith("bench-") ? Number(key.slice(6)) : NaN
    if(!Number.isInteger(n) || n < 0 || n >= this.users){ this.unknown++; return -1 }
    return n
  }
  _set(n, on){
    const byte = n >> 3, mask = 1 << (n & 7), was = (this.bits[byte] & mask) !== 0
    if(on && !was){ this.bits[byte] |= mask; this.count++ }
    if(!on && was){ this.bits[byte] &= ~mask; this.count-- }
  }
  _change(change){
    if(this.synced){ this._set(change >= 0 ? change : ~change, change >= 0) } else { this.pending.push(change) }
  }
  state(state){
    this.frames++
    this.bits.fill(0)
    this.count = 0
    for(const key in state){ const n = this._user(key); if(n >= 0){ this._set(n, true) } }
    this.synced = true
    for(const change of this.pending){ this._change(change) }
    this.pending = []
  }
  /** A presence_diff frame as it came, unparsed: each "bench-<n>": key belongs to the section
   * ("joins" or "leaves") that opens last before it. */
  diffKeys(data){
    this.frames++
    const joins = data.indexOf(JOINS), leaves = data.indexOf(LEAVES)
    for(let at = data.indexOf(KEY); at >= 0; at = data.indexOf(KEY, at + KEY.length)){
      const end = data.indexOf(34, at + 1)  // the closing quote
      if(data[end + 1] !== 58){ continue }  // not an object key (no colon): a value
      const n = this._user(data.toString("latin1", at + 1, end))
      if(n < 0){ continue }
      const inLeaves = leaves >= 0 && leaves < at && (joins < 0 || joins < leaves || joins > at)
      this._change(inLeaves ? ~n : n)
    }
  }
}

function wsOptions(addr){
  return {perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: OPEN_TIMEOUT, ...(addr ? {localAddress: addr} : {})}
}

/** Open `conn.ws` to `conn.url`; a refused upgrade leaves its HTTP status in `conn.status`. */
function openWebSocket(conn, onMessage){
  return new Promise((resolve, reject) => {
    const ws = conn.ws = new WebSocket(conn.url, wsOptions(conn.addr))
    ws.on("unexpected-response", (_req, res) => {
      conn.status = res.statusCode
      res.resume()
      ws.terminate()
      reject(new Error(`HTTP ${res.statusCode}`))
    })
    ws.on("open", resolve)
    ws.on("error", reject)
    ws.on("close", (code) => { conn.closeCode = code; conn._closed() })
    ws.on("message", onMessage)
  })
}

/** A raw Phoenix V2 client: refs from one counter, replies matched by ref. */
class PhoenixConnection {
  constructor(base, token, addr, users){
    this.url = `${base}/socket/websocket?token=${encodeURIComponent(token)}&vsn=2.0.0`
    this.addr = addr
    this.ref = 0
    this.joinRef = null
    this.topic = null
    this.waiting = new Map()
    this.status = 0
    this.closed = false
    this.presence = users ? new PresenceView(users) : null
  }
  open(){
    return openWebSocket(this, (data, isBinary) => { if(!isBinary){ this._frame(data) } })
  }
  _closed(){
    this.closed = true
    const lost = new Error("connection closed")
    for(const {reject} of this.waiting.values()){ reject(lost) }
    this.waiting.clear()
  }
  _frame(data){
    // Only replies and presence_state are parsed as JSON; a diff's keys are found with
    // Buffer searches (a join storm sends one diff per join to every member: N^2 frames).
    if(data.includes(REPLY)){
      const [, ref, , , payload] = JSON.parse(data.toString())
      const waiter = this.waiting.get(ref)
      if(waiter){
        this.waiting.delete(ref)
        if(payload.status === "ok"){ waiter.resolve(payload) } else { waiter.reject(new Error(JSON.stringify(payload))) }
      }
    } else if(this.presence && data.includes(DIFF)){
      this.presence.diffKeys(data)
    } else if(this.presence && data.includes(STATE)){
      const [joinRef, , , , payload] = JSON.parse(data.toString())
      if(joinRef === this.joinRef){ this.presence.state(payload) }
    }
  }
  _request(joinRef, topic, event, payload){
    const ref = String(++this.ref)
    if(event === "phx_join"){ joinRef = ref; this.joinRef = ref; this.topic = topic }
    return new Promise((resolve, reject) => {
      this.waiting.set(ref, {resolve, reject})
      this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload]))
    })
  }
  join(room){ return this._request(null, `room:${room}`, "phx_join", {}) }
  ping(){ return this._request(this.joinRef, this.topic, "ping", {n: 1}) }
  heartbeat(){
    if(!this.closed){ this.ws.send(JSON.stringify([null, String(++this.ref), "phoenix", "heartbeat", {}])) }
  }
  close(){ if(this.ws){ this.ws.terminate() } }
}

/** socket.io through socket.io-client, WebSocket transport only, no reconnects. */
class SocketIOConnection {
  constructor(base, _token, addr){
    this.base = base
    this.addr = addr
    this.status = 0
    this.closed = false
  }
  open(){
    return new Promise((resolve, reject) => {
      const socket = this.socket = ioClient(this.base, {
        transports: ["websocket"], reconnection: false, forceNew: true, timeout: OPEN_TIMEOUT,
        ...(this.addr ? {localAddress: this.addr} : {}),
      })
      socket.once("connect", resolve)
      socket.once("connect_error", (err) => {
        const status = err && err.description && err.description.statusCode
        if(status){ this.status = status }
        reject(err)
      })
      socket.on("disconnect", () => { this.closed = true })
    })
  }
  join(room){ return this.socket.timeout(OPEN_TIMEOUT).emitWithAck("join", room) }
  ping(){ return this.socket.timeout(OPEN_TIMEOUT).emitWithAck("ping", {n: 1}) }
  heartbeat(){}  // engine.io's pings come from the server and are answered by the client
  close(){ if(this.socket){ this.socket.disconnect() } }
}

/** A plain WebSocket to the bare websockets server's /echo path: every message comes back. */
class EchoConnection {
  constructor(base, _token, addr){
    this.url = `${base}/echo`
    this.addr = addr
    this.status = 0
    this.closed = false
    this.waiting = []
  }
  open(){
    return openWebSocket(this, () => { const waiter = this.waiting.shift(); if(waiter){ waiter.resolve() } })
  }
  _closed(){
    this.closed = true
    for(const {reject} of this.waiting){ reject(new Error("connection closed")) }
    this.waiting = []
  }
  _echo(message){
    return new Promise((resolve, reject) => { this.waiting.push({resolve, reject}); this.ws.send(message) })
  }
  join(room){ return this._echo(`{"join":"${room}"}`) }  // no rooms: one round trip instead
  ping(){ return this._echo('{"ping":1}') }
  heartbeat(){}  // the server pings; ws answers
  close(){ if(this.ws){ this.ws.terminate() } }
}

const PROTOCOLS = {phoenix: PhoenixConnection, socketio: SocketIOConnection, echo: EchoConnection}

module.exports = {PROTOCOLS, PresenceView}
