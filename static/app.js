// Switchboard demo page: join a room:* channel with the official phoenix.js client and shout.
// User text only ever reaches the DOM through textContent, never innerHTML.
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
  const channel = socket.channel(`room:${room}`, {});
  const current = { socket, channel, user, room };
  const live = () => session === current;
  session = current;

  socket.onOpen(() => live() && setStatus("connected", "connected"));
  socket.onError(() => live() && setStatus("reconnecting", "reconnecting…"));
  socket.onClose(() => live() && setStatus("reconnecting", "reconnecting…"));

  channel.on("shout", (payload) => live() && addShout(payload, user));
  // Presence lights up once the server sends presence_state / presence_diff; until then the
  // list just stays empty.
  const presence = new Presence(channel);
  presence.onSync(() => live() && renderOnline(presence));

  socket.connect();
  channel
    .join()
    .receive("ok", () => {
      if (!live() || !ui.chat.hidden) return;
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
    .receive("timeout", () => live() && setStatus("reconnecting", "join timed out, retrying…"));
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
  // The server broadcasts shout without a reply, so there is nothing to wait for here.
  session.channel.push("shout", { body, user: session.user });
  ui.message.value = "";
  ui.message.focus();
});

ui.leave.addEventListener("click", () => {
  leave();
  ui.name.focus();
});

ui.name.focus();
document.body.dataset.ready = "true";
