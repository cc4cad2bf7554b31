// boundary-realtime browser client: one WebSocket, authenticated by its first frame, that
// reconnects with backoff, re-subscribes its topics with recovery, refreshes its token before
// it expires, and matches replies to requests by `ref`. No dependencies; an ES module for
// browsers (`<script type="module">`) and Node (pass `WebSocket` in the options).

const SLOW_RECONNECT = new Set([4029]);
const NEW_TOKEN = new Set([4001]);
// Everything else (1001, 1006, 1009, 4008, 4408, unknown codes) reconnects with backoff.
const STOP = new Set([4000, 4400, 4429]);

/** Error of a request the server refused (`{"op":"error"}`) or that timed out. */
export class RealtimeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "RealtimeError";
    this.code = code;
  }
}

export class RealtimeClient {
  /**
   * @param {string} url  e.g. "wss://rt.example.com/ws"
   * @param {object} options see realtime.d.ts
   */
  constructor(url, options = {}) {
    if (!options.token && !options.getToken) {
      throw new TypeError("RealtimeClient needs a token or a getToken() provider");
    }
    this.url = url;
    this.options = {
      initialBackoffMs: 500,
      maxBackoffMs: 30000,
      slowBackoffMs: 15000,
      requestTimeoutMs: 10000,
      refreshBeforeMs: 30000,
      reconnectOn4000: false,
      reconnectOn4400: false,
      maxPending: 1000,
      ...options,
    };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    this.state = "idle";
    this.connectionId = null;
    this._token = options.token || null;
    this._handlers = new Map(); // event -> Set<fn>
    this._pending = new Map(); // ref -> {resolve, reject, timer}
    this._topics = new Map(); // topic -> {offset, epoch, subscribed: bool}
    // Where this client stands in its user stream (direct messages): resumed from on every
    // reconnect. Seeded by options.userStream (e.g. saved in sessionStorage across reloads).
    const seed = options.userStream;
    this._stream =
      seed && Number.isInteger(seed.offset) && typeof seed.epoch === "string"
        ? { offset: seed.offset, epoch: seed.epoch }
        : null;
    this._nextRef = 1;
    this._attempt = 0;
    this._ws = null;
    this._timers = new Set();
    this._refreshTimer = null;
    this._stopped = false;
  }

  /** Where the user stream stands: {offset, epoch} of the last direct message seen (or of
   * `connected`), or null before the first connection. Save it to resume after a page reload
   * (pass it back as options.userStream). */
  get userStream() {
    return this._stream ? { ...this._stream } : null;
  }

  /** Adds a handler; returns a function that removes it. Events: "state", "message",
   * "message:<type>", "publication", "publication:<topic>", "unrecovered", "error". */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this._handlers.get(event)?.delete(handler);
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this._stopped = false;
    if (this._ws || this.state === "connecting") return;
    this._open();
  }

  /** Closes for good: no reconnect. */
  close(code = 1000, reason = "client closed") {
    this._stopped = true;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
    }
    const closed = new RealtimeError("closed", "the client was closed");
    this._failPending(closed);
    for (const entry of this._topics.values()) entry.waiters.splice(0).forEach((w) => w.reject(closed));
    this._setState("closed", { code, reason });
  }

  /** Subscribes to a topic; resolves with {topic, offset, epoch, recovered}. Kept across
   * reconnects (resubscribed with `since`). */
  subscribe(topic) {
    if (!this._topics.has(topic)) this._topics.set(topic, { offset: null, epoch: null, waiters: [] });
    if (this.state !== "connected") {
      // Sent by _onConnected with every other kept topic.
      return new Promise((resolve, reject) => this._topics.get(topic).waiters.push({ resolve, reject }));
    }
    return this._sendSubscribe(topic);
  }

  /** Unsubscribes; resolves when the server confirms. */
  unsubscribe(topic) {
    this._topics.delete(topic);
    if (this.state !== "connected") return Promise.resolve({ topic });
    return this._request({ op: "unsubscribe", topic });
  }

  /** Round trip to the server; resolves with the pong frame. */
  ping() {
    return this._request({ op: "ping" });
  }

  // ---- internals ----

  _emit(event, value) {
    const set = this._handlers.get(event);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(value);
      } catch (e) {
        // A handler's error never reaches the socket loop.
        if (event !== "error") this._emit("error", e);
        else queueMicrotask(() => { throw e; });
      }
    }
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  async _currentToken() {
    if (this.options.getToken) {
      const t = await this.options.getToken();
      this._token = t || null;
    }
    return this._token;
  }

  async _open() {
    this._setState("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._currentToken();
    } catch (e) {
      this._emit("error", e);
      token = null;
    }
    if (this._stopped) return;
    if (!token) {
      this._setState("closed", { code: 4001, reason: "no token" });
      this._stopped = true;
      return;
    }
    const ws = new this.WebSocket(this.url);
    this._ws = ws;
    let authed = false;
    ws.onopen = () => {
      const auth = { op: "auth", token };
      // Resume the user stream: the messages missed while away come first, then live ones.
      if (this._stream) auth.since = { offset: this._stream.offset, epoch: this._stream.epoch };
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch (e) {
        this._emit("error", e);
        return;
      }
      if (frame.op === "connected" && !authed) {
        authed = true;
        this._onConnected(frame);
        return;
      }
      this._onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onClose(ev.code, ev.reason || "");
    };
    ws.onerror = () => {
      /* onclose follows with the code */
    };
  }

  _onConnected(frame) {
    this._attempt = 0;
    this.connectionId = frame.connection_id;
    if (typeof frame.offset === "number") {
      const resumed = frame.recovered !== undefined;
      this._stream = { offset: frame.offset, epoch: frame.epoch };
      // Replayed messages follow `connected` and move the position on as they arrive; when
      // the server could not replay (another epoch, history too short), the app must refetch.
      if (resumed && frame.recovered === false) this._userUnrecovered(frame);
    }
    this._setState("connected", {
      connectionId: frame.connection_id,
      userId: frame.user_id,
      recovered: frame.recovered,
    });
    this._scheduleRefresh(frame.expires_at);
    for (const [topic, entry] of this._topics) {
      const waiters = entry.waiters.splice(0);
      this._sendSubscribe(topic).then(
        (r) => waiters.forEach((w) => w.resolve(r)),
        (e) => {
          if (waiters.length) waiters.forEach((w) => w.reject(e));
          else this._emit("error", e);
        },
      );
    }
  }

  _onFrame(frame) {
    if (frame.op) {
      const ref = frame.ref;
      if (ref !== undefined && this._pending.has(ref)) {
        const p = this._pending.get(ref);
        this._pending.delete(ref);
        clearTimeout(p.timer);
        if (frame.op === "error") p.reject(new RealtimeError(frame.code, frame.message));
        else p.resolve(frame);
      } else if (frame.op === "subscribed") {
        // A server-side Subscribe, or the server saying this topic's position was lost
        // (recovered: false, e.g. after the cluster's Redis restarted): remember the position.
        const t = this._topics.get(frame.topic);
        if (t) {
          t.offset = frame.offset;
          t.epoch = frame.epoch;
        } else {
          this._topics.set(frame.topic, { offset: frame.offset, epoch: frame.epoch, waiters: [] });
        }
        if (frame.recovered === false) {
          this._emit("unrecovered", {
            topic: frame.topic,
            offset: frame.offset,
            epoch: frame.epoch,
            recovered: false,
          });
        }
      } else if (frame.op === "user_stream") {
        // The live user stream's position was lost (the cluster's Redis restarted empty).
        this._stream = { offset: frame.offset, epoch: frame.epoch };
        this._userUnrecovered(frame);
      } else if (frame.op === "error") {
        this._emit("error", new RealtimeError(frame.code, frame.message));
      }
      return;
    }
    if (frame.topic !== undefined) {
      const t = this._topics.get(frame.topic);
      if (t && typeof frame.offset === "number") {
        t.offset = frame.offset;
        t.epoch = frame.epoch;
      }
      this._emit("publication", frame);
      this._emit(`publication:${frame.topic}`, frame);
      return;
    }
    if (typeof frame.offset === "number") this._stream = { offset: frame.offset, epoch: frame.epoch };
    this._emit("message", frame);
    this._emit(`message:${frame.type}`, frame);
  }

  _userUnrecovered(frame) {
    this._emit("unrecovered", { user: true, offset: frame.offset, epoch: frame.epoch, recovered: false });
  }

  _onClose(code, reason) {
    this._clearTimers();
    this._failPending(new RealtimeError("disconnected", `connection closed (${code})`));
    this.connectionId = null;
    this._setState("disconnected", { code, reason });
    if (this._stopped) return;
    const o = this.options;
    const stop =
      (code === 4000 && !o.reconnectOn4000) ||
      (code === 4400 && !o.reconnectOn4400) ||
      (STOP.has(code) && code !== 4000 && code !== 4400);
    if (stop) {
      this._stopped = true;
      this._setState("closed", { code, reason });
      return;
    }
    if (NEW_TOKEN.has(code)) {
      if (!o.getToken) {
        this._stopped = true;
        this._setState("closed", { code, reason });
        return;
      }
      this._token = null; // _open() asks getToken() again; none means stop.
    }
    // RECONNECT codes and unknown ones (1000, 1011, ...) reconnect like a lost connection.
    const slow = SLOW_RECONNECT.has(code);
    this._attempt += 1;
    const cap = Math.min(o.maxBackoffMs, o.initialBackoffMs * 2 ** Math.min(this._attempt, 16));
    let delay = Math.random() * cap; // full jitter
    if (slow) delay = Math.max(delay, o.slowBackoffMs);
    this._later(() => this._open(), delay);
  }

  _later(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimers() {
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._refreshTimer = null;
  }

  _scheduleRefresh(expiresAt) {
    if (!expiresAt || !this.options.getToken) return;
    const wait = Math.max(0, expiresAt - Date.now() - this.options.refreshBeforeMs);
    this._refreshTimer = this._later(() => this._refresh(), wait);
  }

  async _refresh() {
    let token;
    try {
      token = await this.options.getToken();
    } catch (e) {
      this._emit("error", e);
      return;
    }
    if (!token || this.state !== "connected") return;
    this._token = token;
    try {
      const r = await this._request({ op: "refresh", token });
      this._scheduleRefresh(r.expires_at);
    } catch (e) {
      this._emit("error", e);
    }
  }

  _sendSubscribe(topic) {
    const t = this._topics.get(topic) || { offset: null, epoch: null, waiters: [] };
    const frame = { op: "subscribe", topic };
    const resuming = t.epoch != null && t.offset != null;
    if (resuming) frame.since = { offset: t.offset, epoch: t.epoch };
    return this._request(frame).then((r) => {
      const entry = this._topics.get(topic);
      if (entry) {
        entry.offset = r.offset;
        entry.epoch = r.epoch;
      }
      const result = { topic, offset: r.offset, epoch: r.epoch, recovered: r.recovered };
      if (resuming && r.recovered === false) this._emit("unrecovered", result);
      return result;
    });
  }

  _request(frame) {
    const ws = this._ws;
    if (!ws || this.state !== "connected") {
      return Promise.reject(new RealtimeError("disconnected", "not connected"));
    }
    if (this._pending.size >= this.options.maxPending) {
      return Promise.reject(new RealtimeError("too_many_requests", "too many requests pending"));
    }
    const ref = String(this._nextRef++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new RealtimeError("timeout", `no reply to ${frame.op} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this._pending.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  _failPending(err) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }
}
