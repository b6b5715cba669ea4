"use strict"
// Many phoenix.js clients join one topic at once; each keeps a Presence. Prints one JSON line
// once every client lists `expect` keys (or the time is up): the distinct final lists, each
// with the clients that hold it, and per client how many presence frames it received and
// whether any onSync ever showed a key with two metas. The clients stay connected until
// stdin closes. tests/presence drives it.
//
// Usage: node presence_burst.js <endpoint> <topic> <tokens.json> <expect> <timeout_ms>
//   tokens.json: a JSON array of socket tokens, one client each

const fs = require("fs")
const WebSocket = require("ws")
const {Socket, Presence} = require("phoenix")

const [endpoint, topic, tokensFile, expectText, timeoutText] = process.argv.slice(2)
const tokens = JSON.parse(fs.readFileSync(tokensFile, "utf8"))
const expect = Number(expectText)
const started = Date.now()

function countingTransport(client){
  return class CountingWebSocket extends WebSocket {
    constructor(url, protocols){
      super(url, protocols, {perMessageDeflate: false})
      this.on("message", (data, isBinary) => {
        if(!isBinary && (data.includes("\"presence_diff\"") || data.includes("\"presence_state\""))){
          client.frames++
        }
      })
    }
  }
}

const clients = tokens.map((token, n) => {
  const client = {n, frames: 0, doubled: false, presence: null, joined: false}
  const socket = new Socket(endpoint, {
    transport: countingTransport(client), params: {token},
    reconnectAfterMs: () => 600000, rejoinAfterMs: () => 600000, timeout: 30000,
  })
  client.socket = socket
  socket.connect()
  return client
})

let opened = 0
for(const client of clients){
  client.socket.onOpen(() => {
    if(++opened === clients.length){ joinAll() }  // every socket up: now all join at once
  })
}

function joinAll(){
  for(const client of clients){
    const channel = client.socket.channel(topic, {})
    client.presence = new Presence(channel)
    client.presence.onSync(() => {
      client.presence.list((key, p) => { if(p.metas.length > 1){ client.doubled = true } })
    })
    channel.join().receive("ok", () => { client.joined = true })
  }
  const check = setInterval(() => {
    const done = clients.every((c) => c.joined && c.presence.list().length === expect)
    if(done || Date.now() - started > Number(timeoutText)){
      clearInterval(check)
      report()
    }
  }, 20)
}

function report(){
  const lists = new Map()
  for(const client of clients){
    const listing = client.presence ? client.presence.list((key, p) =>
      [key, p.metas.map((m) => m.phx_ref).sort()]) : []
    listing.sort((a, b) => (a[0] < b[0] ? -1 : 1))
    const text = JSON.stringify(listing)
    if(!lists.has(text)){ lists.set(text, []) }
    lists.get(text).push(client.n)
  }
  process.stdout.write(JSON.stringify({
    ms: Date.now() - started,
    joined: clients.filter((c) => c.joined).length,
    lists: [...lists].map(([text, holders]) => ({list: JSON.parse(text), clients: holders})),
    frames: clients.map((c) => c.frames),
    doubled: clients.filter((c) => c.doubled).map((c) => c.n),
  }) + "\n")
  // Connected until stdin closes, so the test can compare with the server's own list.
  process.stdin.resume()
  process.stdin.on("end", () => {
    for(const client of clients){ client.socket.disconnect() }
    setTimeout(() => process.exit(0), 100)
  })
}
