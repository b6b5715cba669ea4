"use strict"
// Test harness: drives the real phoenix.js client (npm `phoenix`) over Node's `ws`, records
// every frame on the wire and every client callback, and prints one JSON result at the end.
//
// Usage (from scenarios.js): `run(scenarios)`; the scenario name is argv[2] and the config
// (endpoint, tokens, topic suffix, time limit) is the JSON in env PHX_SCENARIO_CONFIG.
// The process ALWAYS exits by itself: on success (0), on a thrown error (1), or when the
// time limit passes (2, listing what the scenario was still waiting for).

const {EventEmitter} = require("events")
const WebSocket = require("ws")
const {Socket} = require("phoenix")

/** ArrayBuffers become {$bytes: [...]} so results stay JSON. */
function plain(value){
  if(value instanceof ArrayBuffer){ return {$bytes: Array.from(new Uint8Array(value))} }
  if(ArrayBuffer.isView(value)){ return {$bytes: Array.from(new Uint8Array(value.buffer, value.byteOffset, value.byteLength))} }
  if(Array.isArray(value)){ return value.map(plain) }
  if(value && typeof value === "object"){
    const out = {}
    for(const [k, v] of Object.entries(value)){ out[k] = plain(v) }
    return out
  }
  return value === undefined ? null : value
}

function bytes(list){ return new Uint8Array(list).buffer }

class Harness {
  constructor(config){
    this.config = config
    this.t0 = Date.now()
    this.records = []
    this.obs = {}
    this.pending = new Set()
    this.emitter = new EventEmitter()
    this.emitter.setMaxListeners(0)
    this.sockets = []
  }

  now(){ return Date.now() - this.t0 }

  /** A unique topic for this run, so parallel scenarios on one node never meet. */
  topic(base){ return `${base}-${this.config.suffix}` }

  token(label){
    const token = this.config.tokens[label]
    if(!token){ throw new Error(`no token for ${label}`) }
    return token
  }

  record(label, type, fields = {}){
    const entry = {t: this.now(), label, type, ...fields}
    this.records.push(entry)
    this.emitter.emit("record", entry)
    return entry
  }

  /** A WebSocket class (for the `transport` option) that records every frame and close. */
  transport(label){
    const harness = this
    let connections = 0
    return class RecordingWebSocket extends WebSocket {
      constructor(url, protocols){
        super(url, protocols)
        const conn = ++connections
        this._conn = conn
        harness.record(label, "connect", {conn, url, protocols: protocols || null})
        this.on("open", () => harness.record(label, "ws_open", {conn, protocol: this.protocol}))
        this.on("message", (data, isBinary) => harness.frame(label, conn, "in", data, isBinary))
        this.on("close", (code, reason) => harness.record(label, "ws_close", {conn, code, reason: reason.toString()}))
        this.on("error", error => harness.record(label, "ws_error", {conn, message: error.message}))
      }

      send(data, ...rest){
        harness.frame(label, this._conn, "out", data, typeof data !== "string")
        return super.send(data, ...rest)
      }
    }
  }

  frame(label, conn, dir, data, isBinary){
    if(isBinary){
      const view = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      this.record(label, "frame", {conn, dir, binary: true, bytes: Array.from(view)})
    } else {
      const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8")
      this.record(label, "frame", {conn, dir, binary: false, data: JSON.parse(text)})
    }
  }

  /** A phoenix.js Socket for `label`, connected, with its callbacks recorded. */
  socket(label, opts = {}){
    const {token, ...rest} = opts
    const options = {
      transport: this.transport(label),
      params: {token: token === undefined ? this.token(label) : token},
      ...rest,
    }
    if(token === null){ delete options.params }
    const socket = new Socket(this.config.endpoint, options)
    socket.label = label
    socket.onOpen(() => this.record(label, "open"))
    socket.onClose(event => this.record(label, "close", {code: event.code, reason: event.reason || ""}))
    socket.onError(error => this.record(label, "error", {message: (error && error.message) || String(error)}))
    this.sockets.push(socket)
    socket.connect()
    return socket
  }

  /** Resolve with the first record (past or future) that satisfies `predicate`. */
  waitFor(description, predicate){
    const found = this.records.find(predicate)
    if(found){ return Promise.resolve(found) }
    this.pending.add(description)
    return new Promise(resolve => {
      const listener = entry => {
        if(predicate(entry)){
          this.emitter.off("record", listener)
          this.pending.delete(description)
          resolve(entry)
        }
      }
      this.emitter.on("record", listener)
    })
  }

  /** Resolve once `count` records of `type` for `label` exist. */
  waitCount(label, type, count, extra = () => true){
    const matches = () => this.records.filter(r => r.label === label && r.type === type && extra(r))
    return this.waitFor(`${count} x ${type} on ${label}`, () => matches().length >= count).then(matches)
  }

  /** Wait for a frame on `label` (dir "in"/"out") whose decoded text data satisfies `predicate`. */
  waitFrame(label, dir, description, predicate){
    return this.waitFor(`${dir} frame on ${label}: ${description}`, r =>
      r.label === label && r.type === "frame" && r.dir === dir && predicate(r))
  }

  opened(socket, count = 1){ return this.waitCount(socket.label, "open", count) }

  /** channel.join() as a promise of {status, response, joinRef}; every later join is recorded too. */
  join(channel, description = `join ${channel.topic}`){
    const label = channel.socket.label
    this.pending.add(description)
    return new Promise(resolve => {
      const done = status => response => {
        const result = {status, response: plain(response), joinRef: channel.joinRef(), t: this.now()}
        this.record(label, "join_reply", {topic: channel.topic, ...result})
        this.pending.delete(description)
        resolve(result)
      }
      channel.join()
        .receive("ok", done("ok"))
        .receive("error", done("error"))
        .receive("timeout", done("timeout"))
    })
  }

  /** channel.push() as a promise of {status, response, ref, joinRef, elapsed}. */
  push(channel, event, payload, timeout){
    const label = channel.socket.label
    const description = `reply to ${event} on ${channel.topic}`
    this.pending.add(description)
    const started = this.now()
    return new Promise(resolve => {
      const push = channel.push(event, payload, timeout)
      const ref = push.ref
      const joinRef = channel.joinRef()
      const done = status => response => {
        const result = {status, response: plain(response), ref, joinRef, elapsed: this.now() - started}
        this.record(label, "push_reply", {topic: channel.topic, event, ...result})
        this.pending.delete(description)
        resolve(result)
      }
      push.receive("ok", done("ok")).receive("error", done("error")).receive("timeout", done("timeout"))
    })
  }

  /** Record every `event` the channel delivers (returns the live list of payloads). */
  collect(channel, event){
    const label = channel.socket.label
    const list = []
    channel.on(event, (payload, ref, joinRef) => {
      list.push(plain(payload))
      this.record(label, "chan_event", {topic: channel.topic, event, payload: plain(payload), joinRef})
    })
    return list
  }

  /** Record the channel's onError/onClose callbacks as chan_error / chan_close. */
  watch(channel){
    const label = channel.socket.label
    channel.onError(reason => this.record(label, "chan_error", {topic: channel.topic, reason: plain(reason)}))
    channel.onClose(payload => this.record(label, "chan_close", {topic: channel.topic, payload: plain(payload)}))
    return channel
  }

  /** Only for "nothing else happens" checks, after a sentinel has proved ordering. */
  sleep(ms){ return new Promise(resolve => setTimeout(resolve, ms)) }

  finish(code, error){
    const result = {ok: code === 0, error: error || null, pending: Array.from(this.pending),
      obs: plain(this.obs), records: this.records}
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code))
  }
}

function run(scenarios){
  const name = process.argv[2]
  const config = JSON.parse(process.env.PHX_SCENARIO_CONFIG || "{}")
  const harness = new Harness(config)
  const scenario = scenarios[name]
  if(!scenario){
    harness.finish(1, `unknown scenario ${JSON.stringify(name)}; known: ${Object.keys(scenarios).join(", ")}`)
    return
  }
  let finished = false
  const finish = (code, error) => {
    if(finished){ return }
    finished = true
    harness.finish(code, error)
  }
  setTimeout(() => finish(2, `scenario ${name} timed out after ${config.limitMs} ms`), config.limitMs || 8000)
  process.on("uncaughtException", error => finish(1, `uncaught: ${error.stack || error}`))
  process.on("unhandledRejection", error => finish(1, `unhandled rejection: ${error && error.stack || error}`))
  Promise.resolve()
    .then(() => scenario(harness))
    .then(() => finish(0), error => finish(1, error.stack || String(error)))
}

module.exports = {Harness, run, plain, bytes}
