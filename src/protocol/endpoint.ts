import { native, UV_DISCONNECT, UV_READABLE, type PollHandle } from '../native.js';
import { ConnectError, DisconnectedError, ProtocolError, TimeoutError } from '../errors.js';
import {
  MessageParser,
  encodeMessage,
  VHOST_USER_HEADER_SIZE,
  VHOST_USER_MAX_PAYLOAD,
} from './messages.js';
import type { MessageTransport, VhostUserMessage } from './transport.js';

interface Waiter {
  resolve: (message: VhostUserMessage) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A vhost-user Unix socket: frames the byte stream into messages (with their SCM_RIGHTS fds),
 * and notices when the peer goes away even while nobody is waiting for a reply, so that a
 * backend dying while the device is idle is reported at once.
 */
export class SocketEndpoint implements MessageTransport {
  readonly fd: number;
  /** Called once when the peer closes the connection or breaks the framing. */
  onDisconnect: ((error: Error) => void) | undefined;
  /** Called for a message that arrived while nobody waited for one. */
  onUnsolicited: ((message: VhostUserMessage) => void) | undefined;
  readonly #parser: MessageParser;
  readonly #poll: PollHandle;
  readonly #inbox: VhostUserMessage[] = [];
  readonly #buffer = new Uint8Array(VHOST_USER_HEADER_SIZE + VHOST_USER_MAX_PAYLOAD);
  #waiter: Waiter | undefined;
  #error: Error | undefined;
  #closed = false;

  constructor(fd: number) {
    this.fd = fd;
    this.#parser = new MessageParser({ closeFd: (f) => native.close(f) });
    this.#poll = native.pollStart(fd, UV_READABLE | UV_DISCONNECT, () => this.readAvailable());
    // Idle connections must not keep the process alive; a pending receive() re-refs.
    native.pollRef(this.#poll, false);
  }

  /** Connects to a backend's socket. @throws ConnectError (errno in `.errno`) */
  static connect(socketPath: string): SocketEndpoint {
    let fd: number;
    try {
      fd = native.unixConnect(socketPath);
    } catch (err) {
      throw new ConnectError(socketPath, err);
    }
    return new SocketEndpoint(fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The error the connection ended with, if it did. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** The first message that arrived unasked and is still unread (no onUnsolicited yet). */
  get unread(): VhostUserMessage | undefined {
    return this.#inbox[0];
  }

  send(request: number, flags: number, payload: Uint8Array, fds: readonly number[] = []): void {
    if (this.#error) throw this.#error;
    if (this.#closed) throw new DisconnectedError('connection is closed');
    const bytes = encodeMessage(request, flags, payload);
    let sent: number;
    try {
      sent = native.sendmsg(this.fd, bytes, fds);
    } catch (err) {
      const error = new DisconnectedError(`cannot send to backend: ${(err as Error).message}`, {
        cause: err,
      });
      this.#fail(error);
      throw error;
    }
    // Messages are at most 4 KiB and strictly request/reply, so a full socket buffer means the
    // peer stopped reading: treat it as dead rather than queueing behind it.
    if (sent !== bytes.length) {
      const error = new DisconnectedError(
        `backend is not reading its socket (sent ${Math.max(sent, 0)} of ${bytes.length} bytes)`,
      );
      this.#fail(error);
      throw error;
    }
  }

  receive(timeoutMs: number, operation: string): Promise<VhostUserMessage> {
    const queued = this.#inbox.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) return Promise.reject(new DisconnectedError('connection is closed'));
    if (this.#waiter) return Promise.reject(new Error('SocketEndpoint: concurrent receive'));
    return new Promise<VhostUserMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        native.pollRef(this.#poll, false);
        reject(new TimeoutError(operation, timeoutMs));
      }, timeoutMs);
      this.#waiter = { resolve, reject, timer };
      native.pollRef(this.#poll, true);
    });
  }

  closeFd(fd: number): void {
    native.close(fd);
  }

  /** Reads whatever the socket holds now; also used by blocking waits that saw it readable. */
  readAvailable(): void {
    while (!this.#closed && this.#error === undefined) {
      let result;
      try {
        result = native.recvmsg(this.fd, this.#buffer);
      } catch (err) {
        this.#fail(
          new DisconnectedError(`cannot read from backend: ${(err as Error).message}`, {
            cause: err,
          }),
        );
        return;
      }
      if (result.bytes < 0) return;
      if (result.bytes === 0) {
        for (const fd of result.fds) native.close(fd);
        this.#fail(new DisconnectedError('vhost-user backend closed the connection'));
        return;
      }
      let messages: VhostUserMessage[];
      try {
        messages = this.#parser.push(this.#buffer.subarray(0, result.bytes), result.fds);
      } catch (err) {
        this.#fail(err instanceof ProtocolError ? err : new ProtocolError(String(err)));
        return;
      }
      for (const message of messages) this.#deliver(message);
    }
  }

  #deliver(message: VhostUserMessage): void {
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      clearTimeout(waiter.timer);
      native.pollRef(this.#poll, false);
      waiter.resolve(message);
    } else if (this.onUnsolicited !== undefined) {
      this.onUnsolicited(message);
    } else {
      this.#inbox.push(message);
    }
  }

  #fail(error: Error): void {
    if (this.#error !== undefined || this.#closed) return;
    this.#error = error;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter !== undefined) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    native.pollStop(this.#poll);
    // A message the peer never finished may hold fds (they came with its first bytes).
    this.#parser.reset();
    this.onDisconnect?.(error);
  }

  /**
   * Stops watching and closes the socket; fds of unread and unfinished messages are closed too.
   * Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.pollStop(this.#poll);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter !== undefined) {
      clearTimeout(waiter.timer);
      waiter.reject(new DisconnectedError('connection is closed'));
    }
    for (const message of this.#inbox.splice(0)) for (const fd of message.fds) native.close(fd);
    this.#parser.reset();
    native.close(this.fd);
  }
}
