// Switchboard demo page: join a room:* channel with the official phoenix.js client and shout.
// User text only ever reaches the DOM through textContent, never innerHTML.
//
// A refused socket is silent to a browser (phoenix.js just sees it close and retries), so
// after a connect that never opened the page asks GET /socket/refusal why, says so, and
// stops retrying where retrying cannot help (bad token, too many sockets for this user).
import { Presence, Socket } from "/vendor/phoenix/phoenix.mjs";

const MAX_MESSAGES = 200;
const $ = (id) => document.getElementById(id);

const ui = {
  status: $("status"),
  joinForm: $("join-form"),
  name: $("name"),
  room: $("room"),
  joinButton: $("join"),
  joinError: $("join-error"),
  chat: $("chat"),
  roomName: $("room-name"),
  leave: $("leave"),
  messages: $("messages"),
  online: $("online"),
  onlineCount: $("online-count"),
  onlineEmpty: $("online-empty"),
  sendForm: $("send-form"),
  message: $("message"),
};

/** The current connection: {socket, channel, user, room}, or null. */
let session = null;

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showJoinError(text) {
  ui.joinError.textContent = text;
  ui.joinError.hidden = false;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addMessage(item) {
  const atBottom =
    ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.append(item);
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function addShout(payload, me) {
  const user = typeof payload?.user === "string" && payload.user ? payload.user : "anonymous";
  const body = typeof payload?.body === "string" ? payload.body : JSON.stringify(payload?.body);
  const item = el("li", user === me ? "message own" : "message");
  item.append(el("span", "user", user), el("span", "body", body));
  addMessage(item);
}

function addNotice(text) {
  addMessage(el("li", "notice", text));
}

function renderOnline(presence) {
  const people = presence
    .list((id, { metas }) => ({ id, count: metas.length }))
    .sort((a, b) => a.id.localeCompare(b.id));
  ui.online.replaceChildren(
    ...people.map(({ id, count }) => el("li", null, count > 1 ? `${id} (${count})` : id)),
  );
  ui.onlineCount.textContent = people.length ? String(people.length) : "";
  ui.onlineEmpty.hidden = people.length > 0;
}

async function fetchToken(user) {
  const response = await fetch(`/dev/token?user=${encodeURIComponent(user)}`);
  if (response.status === 404) {
    throw new Error("No token endpoint: /dev/token exists only in the dev profile.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok || typeof body.token !== "string") {
    throw new Error(body.error || `Token request failed (HTTP ${response.status}).`);
  }
  return body.token;
}

/** What the server says about the last refused connect of this page's socket, or null. */
async function askWhyRefused(token) {
  try {
    const response = await fetch(`/socket/refusal?token=${encodeURIComponent(token)}&vsn=2.0.0`, {
      cache: "no-store",
    });
    if (!response.ok) return null;
    return (await response.json()).refusal ?? null;
  } catch {
    return null; // the server is unreachable: nothing to learn, keep retrying
  }
}

/** A sentence for a refusal (see server/refusals.py for the codes). */
function refusalText(refusal, user) {
  const why = refusal.reason ? ` (${refusal.reason})` : "";
  switch (refusal.code) {
    case "socket_limit":
      return `Too many connections open as “${user}”${why}. Close another tab or window using this name, then join again.`;
    case "unauthorized":
      return `The server refused this page's token${why}; it may have expired. Join again for a fresh one.`;
    case "origin":
      return `The server does not accept sockets from this page's origin${why}.`;
    case "version":
      return `The server does not speak this client's protocol version${why}.`;
    case "rate_limited": {
      const wait = refusal.retry_after ? ` in ${refusal.retry_after} s` : "";
      return `Too many connection attempts from this address; retrying${wait}…`;
    }
    case "draining":
      return "The server is restarting; reconnecting…";
    default:
      return `The server is busy${why}; retrying…`;
  }
}

/** The socket closed before it ever opened: find out why, stop if retrying can't help. */
async function connectFailed(current) {
  if (current.asking) return;
  current.asking = true;
  const refusal = await askWhyRefused(current.token);
  current.asking = false;
  if (session !== current || current.opened) return;
  if (!refusal) {
    setStatus("reconnecting", "cannot reach the server; retrying…");
  } else if (refusal.retry) {
    setStatus("reconnecting", refusalText(refusal, current.user));
  } else {
    leave();
    showJoinError(refusalText(refusal, current.user));
  }
}

function leave() {
  const current = session;
  session = null;
  if (current) {
    current.channel.leave();
    current.socket.disconnect();
  }
  setStatus("idle", "not connected");
  ui.chat.hidden = true;
  ui.joinForm.hidden = false;
  ui.joinButton.disabled = false;
}

async function join(user, room) {
  leave();
  ui.joinError.hidden = true;
  ui.joinButton.disabled = true;
  setStatus("connecting", "connecting…");

  let token;
  try {
    token = await fetchToken(user);
  } catch (err) {
    setStatus("idle", "not connected");
    showJoinError(err.message);
    ui.joinButton.disabled = false;
    return;
  }

  const socket = new Socket("/socket", { params: { token } });
  // No message lost (see the README): every rejoin sends the position (ref) of the last
  // message shown, and the server replays what came after it.
  let last = null;
  const channel = socket.channel(`room:${room}`, () => (last ? { since: last } : {}));
  const current = { socket, channel, user, room, token, opened: false, asking: false };
  const live = () => session === current;
  session = current;

  socket.onOpen(() => {
    if (!live()) return;
    current.opened = true;
    setStatus("connected", "connected");
  });
  socket.onClose(() => {
    if (!live()) return;
    if (current.opened) {
      current.opened = false;
      setStatus("reconnecting", "reconnecting…");
    } else {
      connectFailed(current);
    }
  });

  channel.on("shout", (payload, ref) => {
    if (!live()) return;
    last = ref;
    addShout(payload, user);
  });
  // Presence lights up once the server sends presence_state / presence_diff; until then the
  // list just stays empty.
  const presence = new Presence(channel);
  presence.onSync(() => live() && renderOnline(presence));

  socket.connect();
  channel
    .join()
    .receive("ok", ({ position, recovered }) => {
      if (!live()) return;
      if (!recovered) {
        if (last) addNotice("Reconnected; some messages sent meanwhile could not be recovered.");
        last = position;
      }
      if (!ui.chat.hidden) return;
      ui.roomName.textContent = room;
      ui.messages.replaceChildren();
      ui.online.replaceChildren();
      ui.onlineEmpty.hidden = false;
      ui.joinForm.hidden = true;
      ui.chat.hidden = false;
      addNotice(`You joined ${room} as ${user}.`);
      ui.message.focus();
    })
    .receive("error", (response) => {
      if (!live()) return;
      const reason = response?.reason ?? JSON.stringify(response);
      leave();
      showJoinError(`Could not join room “${room}”: ${reason}`);
    })
    .receive("timeout", () => {
      // Without a socket there is no join to time out: the status says why already.
      if (live() && current.opened) setStatus("reconnecting", "join timed out, retrying…");
    });
}

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const user = ui.name.value.trim();
  const room = ui.room.value.trim() || "lobby";
  if (!user) {
    showJoinError("Pick a name first.");
    return;
  }
  join(user, room);
});

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = ui.message.value.trim();
  if (!session || !body) return;
  // A shout that goes through gets no reply (the server broadcasts it, stamped with our
  // user id); one refused by the push rate limit gets an error we must not swallow.
  const current = session;
  current.channel.push("shout", { body }).receive("error", (response) => {
    if (session !== current) return;
    if (response?.reason === "rate_limited") {
      addNotice(`Slow down: “${body}” was not sent (too many messages at once).`);
      if (!ui.message.value) ui.message.value = body;
    } else {
      addNotice(`Not sent: ${response?.reason ?? JSON.stringify(response)}`);
    }
  });
  ui.message.value = "";
  ui.message.focus();
});

ui.leave.addEventListener("click", () => {
  leave();
  ui.name.focus();
});

ui.name.focus();
document.body.dataset.ready = "true";
