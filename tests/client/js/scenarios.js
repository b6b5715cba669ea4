"use strict"
// Scenarios for tests/client/test_phoenix_js.py: `node scenarios.js <name>` with the config in
// env PHX_SCENARIO_CONFIG. Each one drives real phoenix.js sockets against a Switchboard node
// and stores observations in `h.obs`; the wire frames and callbacks are recorded by the
// harness. The assertions live in Python; a scenario only throws when it cannot go on.

const {run, bytes} = require("./harness")

const scenarios = {}

scenarios.join_ok = async h => {
  const a = h.socket("a")
  await h.opened(a)
  const channel = a.channel(h.topic("room:join"))
  h.obs.topic = channel.topic
  h.obs.join = await h.join(channel)
  h.obs.state = channel.state
}

scenarios.ping = async h => {
  const a = h.socket("a")
  const channel = a.channel(h.topic("room:ping"))
  h.obs.topic = channel.topic
  h.obs.join = await h.join(channel)
  h.obs.payload = {text: "héllo ✓", n: 42, nested: {list: [1, 2, null], flag: true}}
  h.obs.ping = await h.push(channel, "ping", h.obs.payload)
}

scenarios.server_push = async h => {
  const a = h.socket("a")
  const channel = a.channel(h.topic("test:push"))
  h.obs.topic = channel.topic
  const pushed = h.collect(channel, "pushed")
  h.obs.join = await h.join(channel)
  channel.push("push", {hello: "you"})
  await h.waitCount("a", "chan_event", 1, r => r.event === "pushed")
  h.obs.pushed = pushed
}

scenarios.shout = async h => {
  const topic = h.topic("room:shout")
  const members = ["a", "b"].map(label => {
    const channel = h.socket(label).channel(topic)
    return {label, channel, shouts: h.collect(channel, "shout")}
  })
  for(const m of members){ await h.join(m.channel) }
  h.obs.topic = topic
  members[0].channel.push("shout", {body: "hi all"})
  for(const m of members){ await h.waitCount(m.label, "chan_event", 1, r => r.event === "shout") }
  h.obs.shouts = Object.fromEntries(members.map(m => [m.label, m.shouts]))
}

scenarios.shout_from = async h => {
  const topic = h.topic("room:shout_from")
  const members = ["a", "b", "c"].map(label => {
    const channel = h.socket(label).channel(topic)
    return {label, channel, shouts: h.collect(channel, "shout")}
  })
  for(const m of members){ await h.join(m.channel) }
  h.obs.topic = topic
  const [sender, ...others] = members
  sender.channel.push("shout_from", {n: 1})
  for(const m of others){ await h.waitCount(m.label, "chan_event", 1, r => r.event === "shout") }
  // Sentinel: a plain shout after the others got n=1 reaches the sender after anything
  // the shout_from could have sent it.
  sender.channel.push("shout", {n: 2})
  for(const m of members){
    await h.waitFor(`sentinel shout on ${m.label}`, r =>
      r.label === m.label && r.type === "chan_event" && r.event === "shout" && r.payload.n === 2)
  }
  h.obs.shouts = Object.fromEntries(members.map(m => [m.label, m.shouts]))
}

scenarios.join_refused = async h => {
  const a = h.socket("a")
  const forbidden = h.watch(a.channel("room:forbidden"))
  const secret = h.watch(a.channel(h.topic("secret:x")))
  h.obs.forbidden = await h.join(forbidden)
  h.obs.secret = await h.join(secret)
  // The client retries a refused join about a second later, with a new join_ref.
  const retry = await h.waitCount("a", "join_reply", 2, r => r.topic === "room:forbidden")
  h.obs.forbidden_retry = retry[1]
  forbidden.leave()
  secret.leave()
  // The socket is still usable.
  const room = a.channel(h.topic("room:after_refusal"))
  h.obs.room = await h.join(room)
  h.obs.ping = await h.push(room, "ping", {still: "here"})
}

scenarios.join_crash = async h => {
  const a = h.socket("a")
  const crashing = a.channel(h.topic("test:join_crash"), {crash: true})
  h.obs.crash = await h.join(crashing)
  crashing.leave()
  const room = a.channel(h.topic("room:after_crash"))
  h.obs.room = await h.join(room)
  h.obs.ping = await h.push(room, "ping", {still: "here"})
}

scenarios.unmatched = async h => {
  const a = h.socket("a")
  const nope = a.channel(h.topic("nope:x"))
  h.obs.topic = nope.topic
  h.obs.join = await h.join(nope)
  nope.leave()
  const room = a.channel(h.topic("room:after_unmatched"))
  h.obs.room = await h.join(room)
  h.obs.ping = await h.push(room, "ping", {still: "here"})
}

scenarios.leave = async h => {
  const topic = h.topic("room:leave")
  h.obs.topic = topic
  const a = h.socket("a")
  const b = h.socket("b")
  const leaving = h.watch(a.channel(topic))
  const aShouts = h.collect(leaving, "shout")
  const side = a.channel(h.topic("room:leave_side"))
  const bChannel = b.channel(topic)
  await h.join(leaving)
  await h.join(side)
  await h.join(bChannel)
  h.obs.join_ref = leaving.joinRef()
  // leave() resolves locally at once (phoenix.js 1.8 triggers "ok" as the channel is no
  // longer joined), so wait for the server's own reply on the wire before b shouts.
  const leavePush = leaving.leave()
  h.obs.leave_ref = leavePush.ref
  await h.waitCount("a", "chan_close", 1)
  h.obs.leave_reply = (await h.waitFrame("a", "in", "the server's reply to phx_leave", r =>
    !r.binary && r.data[3] === "phx_reply" && r.data[1] === leavePush.ref)).data
  // b shouts twice (waiting for its own copy each time), then a pings on another channel:
  // a shout sent to a would be in a's socket before that ping's reply.
  for(const n of [1, 2]){
    bChannel.push("shout", {n})
    await h.waitFor(`b's own shout ${n}`, r => r.label === "b" && r.type === "frame" && r.dir === "in" &&
      !r.binary && r.data[3] === "shout" && r.data[4].n === n)
  }
  h.obs.sentinel = await h.push(side, "ping", {sentinel: true})
  h.obs.a_shouts = aShouts
  h.obs.state = leaving.state
  h.obs.channels = a.channels.map(c => c.topic)
}

scenarios.heartbeat = async h => {
  const interval = 100
  const a = h.socket("a", {heartbeatIntervalMs: interval})
  await h.opened(a)
  const replies = []
  a.onMessage(msg => {
    if(msg.topic === "phoenix" && msg.event === "phx_reply"){
      replies.push({ref: msg.ref, status: msg.payload.status, t: h.now()})
      h.record("a", "heartbeat_reply", {ref: msg.ref})
    }
  })
  await h.waitCount("a", "heartbeat_reply", 6)
  h.obs.interval = interval
  h.obs.replies = replies
  h.obs.connected = a.isConnected()
}

scenarios.reconnect_after_kick = async h => {
  const topic = h.topic("room:reconnect")
  h.obs.topic = topic
  const a = h.socket("a")
  const b = h.socket("b")
  const kicker = a.channel(h.topic("test:kick"))
  const room = h.watch(a.channel(topic))
  const aShouts = h.collect(room, "shout")
  const bRoom = b.channel(topic)
  const bShouts = h.collect(bRoom, "shout")
  await h.join(kicker)
  await h.join(room, "first join of the room")
  await h.join(bRoom)
  kicker.push("kick", {})
  await h.waitCount("a", "close", 1)
  await h.opened(a, 2)
  // join() resolved once; later joins of the same channel are recorded by its receive hooks
  const joins = await h.waitCount("a", "join_reply", 2, r => r.topic === topic && r.status === "ok")
  h.obs.room_joins = joins
  room.push("shout", {after: "reconnect"})
  await h.waitCount("a", "chan_event", 1, r => r.event === "shout")
  await h.waitCount("b", "chan_event", 1, r => r.event === "shout")
  h.obs.a_shouts = aShouts
  h.obs.b_shouts = bShouts
}

scenarios.crash = async h => {
  const a = h.socket("a")
  const channel = h.watch(a.channel(h.topic("test:crash")))
  h.obs.topic = channel.topic
  h.obs.join = await h.join(channel)
  const crashPush = channel.push("crash", {})
  h.obs.crash_ref = crashPush.ref
  const error = await h.waitCount("a", "chan_error", 1)
  h.obs.chan_error = error[0]
  const joins = await h.waitCount("a", "join_reply", 2, r => r.topic === channel.topic)
  h.obs.rejoin = joins[1]
  h.obs.ping = await h.push(channel, "ping", {after: "crash"})
}

scenarios.stop = async h => {
  const a = h.socket("a")
  const channel = h.watch(a.channel(h.topic("test:stop")))
  h.obs.topic = channel.topic
  h.obs.join = await h.join(channel)
  h.obs.stop = await h.push(channel, "stop", {})
  await h.waitCount("a", "chan_close", 1)
  // A rejoin would go out after ~1 s (the first rejoin interval): watch for 1.3 s.
  await h.sleep(1300)
  h.obs.state = channel.state
  h.obs.channels = a.channels.map(c => c.topic)
}

scenarios.duplicate_join = async h => {
  const topic = h.topic("room:dup")
  h.obs.topic = topic
  const a = h.socket("a")
  const b = h.socket("b")
  const first = h.watch(a.channel(topic))
  h.obs.first = await h.join(first, "first join")
  const second = h.watch(a.channel(topic))
  const shouts = h.collect(second, "shout")
  h.obs.second = await h.join(second, "second join")
  await h.waitCount("a", "chan_close", 1)
  const bChannel = b.channel(topic)
  await h.join(bChannel)
  bChannel.push("shout", {n: 1})
  await h.waitCount("a", "chan_event", 1, r => r.event === "shout")
  // sentinel: any second copy of the shout would arrive before this reply
  h.obs.sentinel = await h.push(second, "ping", {sentinel: true})
  h.obs.shouts = shouts
  h.obs.first_state = first.state
  h.obs.second_state = second.state
  h.obs.channels = a.channels.map(c => c.topic)
}

// A rejoin that skips the leave (the server's duplicate-join path): the server replaces the
// channel and sends phx_close with the OLD join_ref, which the client must drop as stale.
scenarios.rejoin_without_leave = async h => {
  const a = h.socket("a")
  const channel = h.watch(a.channel(h.topic("test:stale")))
  h.obs.topic = channel.topic
  h.obs.first = await h.join(channel, "first join")
  const oldJoinRef = channel.joinRef()
  channel.joinPush.resend(channel.timeout)  // what rejoin() sends, minus leaving first
  const joins = await h.waitCount("a", "join_reply", 2)
  h.obs.second = joins[1]
  await h.waitFrame("a", "in", "phx_close with the old join_ref", r =>
    !r.binary && r.data[3] === "phx_close" && r.data[0] === oldJoinRef)
  // A push carrying the old join_ref is ignored by the server; the reply to a current
  // ping (sent after it) proves the stale one was never answered.
  const staleRef = a.makeRef()
  h.obs.stale_ref = staleRef
  a.push({topic: channel.topic, event: "ping", payload: {stale: true}, ref: staleRef, join_ref: oldJoinRef})
  h.obs.ping = await h.push(channel, "ping", {current: true})
  h.obs.state = channel.state
  h.obs.channels = a.channels.map(c => c.topic)
}

scenarios.bad_token = async h => {
  const a = h.socket("a", {token: "not-a-valid-token"})
  const channel = h.watch(a.channel(h.topic("room:never")))
  channel.join()
  await h.waitCount("a", "close", 3)
  await h.waitCount("a", "chan_error", 1)
  a.disconnect()
  h.obs.connected = a.isConnected()
}

scenarios.auth_token = async h => {
  const a = h.socket("a", {token: null, authToken: h.token("a")})
  await h.opened(a)
  h.obs.protocol = a.conn.protocol
  const room = a.channel(h.topic("room:auth_token"))
  h.obs.join = await h.join(room)
  h.obs.ping = await h.push(room, "ping", {via: "authToken"})
}

scenarios.binary = async h => {
  const topic = h.topic("room:bin")
  h.obs.topic = topic
  const a = h.socket("a")
  const b = h.socket("b")
  const room = a.channel(topic)
  const test = a.channel(h.topic("test:bin"))
  h.obs.test_topic = test.topic
  const bRoom = b.channel(topic)
  const pushed = h.collect(test, "pushed")
  const aShouts = h.collect(room, "shout")
  const bShouts = h.collect(bRoom, "shout")
  h.obs.join = await h.join(room)
  await h.join(test)
  await h.join(bRoom)
  h.obs.sent = [0, 1, 2, 127, 128, 254, 255, 0x68, 0x69, 0]
  h.obs.ping = await h.push(room, "ping", bytes(h.obs.sent))
  test.push("push", bytes([9, 8, 7]))
  await h.waitCount("a", "chan_event", 1, r => r.event === "pushed")
  h.obs.pushed = pushed
  room.push("shout", bytes([1, 2, 3, 250]))
  await h.waitCount("a", "chan_event", 1, r => r.event === "shout")
  await h.waitCount("b", "chan_event", 1, r => r.event === "shout")
  h.obs.a_shouts = aShouts
  h.obs.b_shouts = bShouts
}

scenarios.push_timeout = async h => {
  const a = h.socket("a")
  const slow = a.channel(h.topic("test:slow"))
  const side = a.channel(h.topic("room:side"))
  await h.join(slow)
  await h.join(side)
  h.obs.sleep = await h.push(slow, "sleep", {ms: 800}, 300)
  h.obs.side_ping = await h.push(side, "ping", {up: true})
  h.obs.connected_after_timeout = a.isConnected()
  // The channel is busy until the sleep ends; its late reply arrives first and is ignored.
  h.obs.slow_ping = await h.push(slow, "ping", {after: "sleep"})
  h.obs.connected = a.isConnected()
}

// Several pushes sent in one go: their replies should follow each other at once (a server
// socket without TCP_NODELAY holds the later ones back ~40 ms for the client's delayed ACK).
scenarios.back_to_back = async h => {
  const a = h.socket("a")
  const room = a.channel(h.topic("room:b2b"))
  await h.join(room)
  h.obs.rounds = []
  for(let round = 0; round < 6; round++){
    const started = h.now()
    const replies = await Promise.all([0, 1, 2].map(i => h.push(room, "ping", {round, i})))
    const times = replies.map(r => started + r.elapsed)
    h.obs.rounds.push({first: Math.min(...times) - started, last: Math.max(...times) - started})
  }
}

run(scenarios)
