"use strict"
// The Node load generator of the benchmark (loadtest/bench/nodegen.py starts and drives it).
// Node, because one Python process on one core could not open, join and ping fast enough to
// keep the servers busy; `ws` does the wire work in C++ and V8.
//
// Usage: node generator.js CONFIG.json; then one JSON command per line on stdin, each answered
// by one JSON line {"done": op, ...} on stdout. Times are epoch milliseconds (Date.now() plus
// performance.now() fractions) so that several generator processes can be merged.
//
// CONFIG: {protocol: "phoenix"|"socketio"|"echo", base: "ws://127.0.0.1:PORT", tokens: FILE
//   (a JSON array, token n for user "bench-n"), first, count (this process's users),
//   users (all users in the run: the size of a presence view; 0 = no presence bookkeeping),
//   sample: n phoenix.js clients (users sample_first ..) that check presence as a real client
//   does, addrs: local source addresses used in turn, concurrency, heartbeat_ms}
// Commands:
//   {op: "connect", room?, rooms?}  open every connection (at most `concurrency` opening at
//       once); with `room`, join "<room>:<n % rooms>" (or "<room>" when rooms is 1) too
//   {op: "join_storm", room, timeout_ms}  every connection joins `room` at once; done when all
//       are joined and every presence view (raw and phoenix.js) lists all users
//   {op: "reqreply", seconds, warmup}  closed loop: each connection pings, waits, pings again
//   {op: "status"}  how many connections are still up
//   {op: "exit"}

const fs = require("fs")
const readline = require("readline")
const {performance} = require("perf_hooks")
const WebSocket = require("ws")
const {Socket, Presence} = require("phoenix")
const {PROTOCOLS, reset} = require("./protocols")

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"))
const tokens = config.protocol === "phoenix" ? JSON.parse(fs.readFileSync(config.tokens, "utf8")) : []
const Connection = PROTOCOLS[config.protocol]
const conns = []
const samples = []

function now(){ return performance.timeOrigin + performance.now() }
function reply(op, fields){ process.stdout.write(JSON.stringify({done: op, ...fields}) + "\n") }
function percentile(sorted, q){ return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null }
function sleep(ms){ return new Promise((resolve) => setTimeout(resolve, ms)) }
function addrOf(n){ return config.addrs && config.addrs.length ? config.addrs[n % config.addrs.length] : undefined }
function roomOf(n, room, rooms){ return rooms > 1 ? `${room}:${n % rooms}` : room }

async function connect({room, rooms = 1}){
  const started = now()
  const refused = {}
  let ok = 0, failed = 0, firstError = null, next = 0
  const took = []
  async function one(n){
    const conn = new Connection(config.base, tokens[n], addrOf(n), config.users)
    conn.n = n
    const t = now()
    try {
      await conn.open()
      if(room){ await conn.join(roomOf(n, room, rooms)) }
      conns.push(conn)
      ok++
      took.push(now() - t)
    } catch(err){
      if(conn.status){ refused[conn.status] = (refused[conn.status] || 0) + 1 } else { failed++ }
      firstError = firstError || String(err && err.message || err)
      conn.close()
    }
  }
  async function worker(){
    while(next < config.count){ await one(config.first + next++) }
  }
  await Promise.all(Array.from({length: Math.min(config.concurrency, config.count)}, worker))
  const ended = now()
  for(let i = 0; i < (config.sample || 0); i++){ samples.push(await sampleClient(config.sample_first + i)) }
  took.sort((a, b) => a - b)
  reply("connect", {started, ended, ok, refused, failed, first_error: firstError,
    p50_ms: percentile(took, 0.5), p99_ms: percentile(took, 0.99)})
}

/** A real phoenix.js client (Node `ws` transport) whose Presence says when it sees everyone. */
function sampleClient(n){
  return new Promise((resolve, reject) => {
    const socket = new Socket(`${config.base}/socket`, {
      transport: WebSocket, params: {token: tokens[n]}, reconnectAfterMs: () => 3600000,
    })
    socket.onOpen(() => resolve({socket, n}))
    socket.onError((err) => reject(new Error(`sample client ${n}: ${err && err.message || err}`)))
    socket.connect()
  })
}

async function joinStorm({room, timeout_ms = 600000}){
  const t0 = now()
  let joined = 0, failed = 0, firstError = null, joinedAt = null
  const all = conns.map((conn) => conn.join(room).then(
    () => { joined++ },
    (err) => { failed++; firstError = firstError || String(err.message || err) },
  ))
  for(const sample of samples){
    const channel = sample.channel = sample.socket.channel(`room:${room}`, {})
    sample.presence = new Presence(channel)
    sample.joined = new Promise((resolve) => channel.join().receive("ok", resolve))
  }
  const late = sleep(timeout_ms).then(() => "late")
  const joinedAll = await Promise.race([Promise.all([...all, ...samples.map((s) => s.joined)]), late])
  joinedAt = joinedAll === "late" ? null : now()
  const users = config.users
  const exact = () => !users || (conns.every((c) => c.presence.count === users) &&
    samples.every((s) => s.presence.list().length === users))
  while(joinedAt && !exact() && now() - t0 < timeout_ms){ await sleep(20) }
  const exactAt = exact() ? now() : null
  if(users){ await sleep(500) }  // anything still on its way is counted as presence frames too
  const views = users ? conns.map((c) => c.presence) : []
  reply("join_storm", {
    t0, joined_at: joinedAt, exact_at: exactAt, joined, failed, first_error: firstError,
    clients_exact: views.filter((v) => v.count === users).length,
    closed: conns.filter((c) => c.closed).length,
    close_codes: conns.filter((c) => c.closed).reduce((codes, c) => {
      codes[c.closeCode] = (codes[c.closeCode] || 0) + 1
      return codes
    }, {}),
    samples_exact: samples.filter((s) => s.presence.list().length === users).length,
    samples: samples.length,
    presence_frames: views.reduce((sum, v) => sum + v.frames, 0),
    presence_bytes: views.reduce((sum, v) => sum + v.bytes, 0),
    unknown_keys: views.reduce((sum, v) => sum + v.unknown, 0),
  })
}

async function reqreply({seconds, warmup}){
  const start = now(), measureFrom = start + warmup * 1000, end = measureFrom + seconds * 1000
  const latencies = []
  let errors = 0, firstError = null
  async function loop(conn){
    while(!conn.closed){
      const t = now()
      if(t >= end){ return }
      try {
        await conn.ping()
      } catch(err){
        errors++
        firstError = firstError || String(err.message || err)
        return
      }
      if(t >= measureFrom){ latencies.push(now() - t) }
    }
  }
  await Promise.all(conns.map(loop))
  latencies.sort((a, b) => a - b)
  reply("reqreply", {measure_from: measureFrom, measure_to: end, requests: latencies.length,
    per_s: latencies.length / seconds, p50_ms: percentile(latencies, 0.5),
    p99_ms: percentile(latencies, 0.99), errors, first_error: firstError})
}

const commands = {
  connect, join_storm: joinStorm, reqreply,
  status: async() => reply("status", {alive: conns.filter((c) => !c.closed).length, closed: conns.filter((c) => c.closed).length}),
  exit: async() => { for(const c of conns){ reset(c) } process.exit(0) },
}

if(config.heartbeat_ms){
  setInterval(() => { for(const c of conns){ c.heartbeat() } }, config.heartbeat_ms).unref()
}

const lines = readline.createInterface({input: process.stdin})
let queue = Promise.resolve()
lines.on("line", (line) => {
  const command = JSON.parse(line)
  queue = queue.then(() => commands[command.op](command)).catch((err) => reply(command.op, {error: String(err && err.stack || err)}))
})
lines.on("close", () => process.exit(0))
process.stdout.write(JSON.stringify({ready: true}) + "\n")
