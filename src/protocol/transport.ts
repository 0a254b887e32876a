/**
 * The one seam between the frontend's request logic and socket I/O. The native-socket
 * implementation lives in endpoint.ts; tests use an in-memory fake.
 */

/** One framed vhost-user message, header fields split out. */
export interface VhostUserMessage {
  request: number;
  flags: number;
  /** Exactly `size` bytes from the header; owned by the receiver. */
  payload: Uint8Array;
  /** File descriptors that arrived with the message; the receiver owns (and must close) them. */
  fds: number[];
}

export interface MessageTransport {
  /** Sends one message; throws DisconnectedError if the peer is gone. */
  send(request: number, flags: number, payload: Uint8Array, fds?: readonly number[]): void;
  /** Next complete message from the peer; rejects TimeoutError after timeoutMs, DisconnectedError on EOF. */
  receive(timeoutMs: number, operation: string): Promise<VhostUserMessage>;
  /** Closes an fd the caller received and does not keep. */
  closeFd(fd: number): void;
}
