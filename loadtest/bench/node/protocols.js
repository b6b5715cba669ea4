"use strict"
// How the Node load generator speaks to each kind of server: Phoenix V2 (switchboard), socket.io
// (Node's or python-socketio, its wire protocol on `ws`) and plain WebSocket echo
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

const OPEN_TIMEOUT = 60000
const HEAD = 256  // bytes of a frame that hold its refs, topic and event
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
    this.bytes = 0
    this.unknown = 0
  }
  _set(n, on){
    const byte = n >> 3, mask = 1 << (n & 7), was = (this.bits[byte] & mask) !== 0
    if(on && !was){ this.bits[byte] |= mask; this.count++ }
    if(!on && was){ this.bits[byte] &= ~mask; this.count-- }
  }
  _change(change){
    if(this.synced){ this._set(change >= 0 ? change : ~change, change >= 0) } else { this.pending.push(change) }
  }
  /** A presence_state frame as it came, unparsed: every "bench-<n>": key is a member. (A
   * real client parses the JSON; 5000 clients each parsing a list of up to 5000 on the one
   * generator core would time the generator, not the server. The phoenix.js sample does.) */
  stateKeys(data){
    this.frames++
    this.bytes += data.length
    this.bits.fill(0)
    this.count = 0
    this._keys(data, (n) => this._set(n, true))
    this.synced = true
    for(const change of this.pending){ this._change(change) }
    this.pending = []
  }
  /** A presence_diff frame as it came, unparsed: each "bench-<n>": key belongs to the section
   * ("joins" or "leaves") that opens last before it. */
  diffKeys(data){
    this.frames++
    this.bytes += data.length
    const joins = data.indexOf(JOINS), leaves = data.indexOf(LEAVES)
    this._keys(data, (n, at) => {
      const inLeaves = leaves >= 0 && leaves < at && (joins < 0 || joins < leaves || joins > at)
      this._change(inLeaves ? ~n : n)
    })
  }
  /** Call `found(n, at)` for each "bench-<n>" object key (followed by a colon) in `data`; the
   * digits are read off the bytes (a join storm's frames hold millions of keys in all). */
  _keys(data, found){
    const digits = KEY.length
    for(let at = data.indexOf(KEY); at >= 0; at = data.indexOf(KEY, at + digits)){
      let n = 0, i = at + digits, c = data[i]
      for(; c >= 48 && c <= 57; c = data[++i]){ n = n * 10 + c - 48 }
      if(c === 34 && i > at + digits){
        if(data[i + 1] !== 58){ continue }  // not an object key (no colon): a value
        if(n < this.users){ found(n, at) } else { this.unknown++ }
      } else {
        const end = data.indexOf(34, i)  // "bench-" then something else: a key nobody made?
        if(data[end + 1] === 58){ this.unknown++ }
      }
    }
  }
}

/** The join ref a V2 frame starts with (`["<ref>",...`), or null. */
function frameJoinRef(data){
  if(data[1] !== 34){ return null }
  return data.toString("latin1", 2, data.indexOf(34, 2))
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
    // Only replies are parsed as JSON; presence keys are found with Buffer searches (a join
    // storm sends every member the whole room: N^2 keys in all). The event is told from the
    // frame's head: a state is up to N keys long.
    const head = data.length > HEAD ? data.subarray(0, HEAD) : data
    if(head.includes(REPLY)){
      const [, ref, , , payload] = JSON.parse(data.toString())
      const waiter = this.waiting.get(ref)
      if(waiter){
        this.waiting.delete(ref)
        if(payload.status === "ok"){ waiter.resolve(payload) } else { waiter.reject(new Error(JSON.stringify(payload))) }
      }
    } else if(this.presence && head.includes(DIFF)){
      this.presence.diffKeys(data)
    } else if(this.presence && head.includes(STATE)){
      if(frameJoinRef(data) === this.joinRef){ this.presence.stateKeys(data) }
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

/** socket.io (Engine.IO 4, socket.io protocol 5) spoken on a plain `ws` WebSocket: the
 * packets socket.io-client sends on its WebSocket transport (CONNECT to "/", events with
 * acks, a pong for each server ping), without its per-packet machinery. Driving 5000 clients
 * through socket.io-client saturated the generator core, so the peer's rates were the
 * client's (338 to 998 opens/s in three runs of one server). */
class SocketIOConnection {
  constructor(base, _token, addr){
    this.url = `${base}/socket.io/?EIO=4&transport=websocket`
    this.addr = addr
    this.status = 0
    this.closed = false
    this.acks = 0
    this.waiting = new Map()
    this.connecting = null
  }
  open(){
    const connected = new Promise((resolve, reject) => { this.connecting = {resolve, reject} })
    return openWebSocket(this, (data) => this._packet(data.toString())).then(() => connected)
  }
  _packet(packet){
    const type = packet.charCodeAt(0) - 48  // Engine.IO packet type
    if(type === 4){  // message: a socket.io packet follows
      const kind = packet.charCodeAt(1) - 48
      if(kind === 3){  // ACK: "43<id>[...]"
        const id = Number(packet.slice(2, packet.indexOf("[")))
        const waiter = this.waiting.get(id)
        if(waiter){ this.waiting.delete(id); waiter.resolve(JSON.parse(packet.slice(packet.indexOf("[")))) }
      } else if(kind === 0 && this.connecting){ this.connecting.resolve(); this.connecting = null }
      else if(kind === 4 && this.connecting){ this.connecting.reject(new Error(`connect_error ${packet.slice(2)}`)); this.connecting = null }
    } else if(type === 2){ this.ws.send("3") }  // ping -> pong
    else if(type === 0){ this.ws.send("40") }  // open -> CONNECT to the main namespace
  }
  _closed(){
    this.closed = true
    const lost = new Error("connection closed")
    if(this.connecting){ this.connecting.reject(lost); this.connecting = null }
    for(const {reject} of this.waiting.values()){ reject(lost) }
    this.waiting.clear()
  }
  _emit(event, data){
    const id = this.acks++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, {resolve, reject})
      this.ws.send(`42${id}${JSON.stringify([event, data])}`)
    })
  }
  join(room){ return this._emit("join", room) }
  ping(){ return this._emit("ping", {n: 1}) }
  heartbeat(){}  // engine.io's pings come from the server and are answered above
  close(){ if(this.ws){ this.ws.terminate() } }
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

/** Drop `conn` with a TCP reset. A close (FIN) first from this side leaves the port in
 * TIME_WAIT for 60 s, and since every socket binds a source address before connecting, the
 * kernel's search for a free port then grows with them: the next scenario's generator spent
 * most of its core in that search (72% system time opening 5000 sockets after a run of 10,000). */
function reset(conn){
  const socket = conn.ws && conn.ws._socket
  if(socket && socket.resetAndDestroy){ socket.resetAndDestroy() } else { conn.close() }
}

const PROTOCOLS = {phoenix: PhoenixConnection, socketio: SocketIOConnection, echo: EchoConnection}

module.exports = {reset, PROTOCOLS, PresenceView}
