// Type declarations for realtime.js.

export interface RealtimeOptions {
  /** A fixed token (JWT). Give this or getToken. */
  token?: string;
  /** Called before every (re)connect and before the token expires; null/undefined stops. */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** A WebSocket constructor (Node: `import WebSocket from "ws"`); defaults to globalThis.WebSocket. */
  WebSocket?: unknown;
  /** First reconnect's backoff cap in ms (doubles per attempt, full jitter). Default 500. */
  initialBackoffMs?: number;
  /** Largest backoff cap in ms. Default 30000. */
  maxBackoffMs?: number;
  /** Least delay after a 4029 (rate limited) close. Default 15000. */
  slowBackoffMs?: number;
  /** How long a request (subscribe, unsubscribe, ping, refresh) waits for its reply. Default 10000. */
  requestTimeoutMs?: number;
  /** Refresh this long before the token's exp. Default 30000. */
  refreshBeforeMs?: number;
  /** Reconnect after 4000 (Disconnect by the backend). Default false. */
  reconnectOn4000?: boolean;
  /** Reconnect after 4400 (too many bad frames). Default false. */
  reconnectOn4400?: boolean;
  /** Requests awaiting a reply at most. Default 1000. */
  maxPending?: number;
  /** Where to resume the user stream from (a `userStream` saved before a page reload). */
  userStream?: UserStreamPosition;
}

/** A place in the user stream (direct messages). */
export interface UserStreamPosition {
  offset: number;
  epoch: string;
}

export type State = "idle" | "connecting" | "connected" | "disconnected" | "closed";

export interface StateChange {
  state: State;
  /** connecting: the attempt number (0 first). */
  attempt?: number;
  /** connected */
  connectionId?: string;
  userId?: string;
  /** connected after a resume: whether the missed direct messages follow (false: refetch). */
  recovered?: boolean;
  /** disconnected / closed: the close code and reason. */
  code?: number;
  reason?: string;
}

/** An application message: `{"type","payload","id","ts"}`; a direct message (SendToUser)
 * with user streams on also has its place in the user stream. */
export interface Message<P = unknown> {
  type: string;
  payload: P;
  id: string;
  ts: number;
  offset?: number;
  epoch?: string;
}

/** A topic publication: a message with its topic position. */
export interface Publication<P = unknown> extends Message<P> {
  topic: string;
  offset: number;
  epoch: string;
}

export interface Subscribed {
  /** Absent when it is the user stream that could not be recovered (then `user` is true). */
  topic?: string;
  user?: boolean;
  offset: number;
  epoch: string;
  /** Present after a resubscribe with `since`: false means publications were missed. */
  recovered?: boolean;
}

export declare class RealtimeError extends Error {
  /** The server's error code (bad_request, unauthorized, forbidden, too_many_subscriptions,
   * ...) or timeout, disconnected, closed, too_many_requests. */
  code: string;
}

export declare class RealtimeClient {
  constructor(url: string, options: RealtimeOptions);
  readonly state: State;
  readonly connectionId: string | null;
  /** The last user-stream position seen; save it to resume after a reload. */
  readonly userStream: UserStreamPosition | null;
  connect(): void;
  close(code?: number, reason?: string): void;
  subscribe(topic: string): Promise<Subscribed>;
  unsubscribe(topic: string): Promise<unknown>;
  ping(): Promise<unknown>;
  on(event: "state", handler: (s: StateChange) => void): () => void;
  on(event: "message", handler: (m: Message) => void): () => void;
  on(event: `message:${string}`, handler: (m: Message) => void): () => void;
  on(event: "publication", handler: (p: Publication) => void): () => void;
  on(event: `publication:${string}`, handler: (p: Publication) => void): () => void;
  /** A resubscribe after a reconnect (or, with `user: true`, the user stream's resume) could not
   * replay what was missed: reload that state. */
  on(event: "unrecovered", handler: (s: Subscribed) => void): () => void;
  /** Errors of handlers, of getToken, and server errors not tied to a request. */
  on(event: "error", handler: (e: unknown) => void): () => void;
}
