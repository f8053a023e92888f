/**
 * A TCP proxy in front of a real server, to cut a client's connection for real: `cut()` destroys every
 * open connection and refuses new ones (as a lost network does), `restore()` lets them through again.
 * `blackhole()` is the nastier fault: a link that silently stops delivering, without closing anything
 * (a dead route, a firewall dropping packets, a frozen peer). Connections stay open, new ones are
 * accepted but not connected through, and nothing is forwarded either way; `heal()` delivers what
 * was held back (as TCP retransmits would once the route is back) and forwards again.
 * `retarget(port)` sends new connections to another server (a virtual IP or a proxy switched to a
 * promoted replica); open connections stay on the old one unless asked to be cut.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

/** A proxied connection: client <-> upstream. */
interface Pair {
  client: Socket;
  upstream: Socket;
}

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly pairs = new Set<Pair>();
  /** Connections accepted while the proxy is a black hole: connected through on heal(). */
  private readonly pending: (() => void)[] = [];
  private cutOff = false;
  private holes = false;
  /** cutOnClientData(): the connections to cut when their client sends matching bytes. */
  private cutOnData: { pattern: RegExp; left: number } | undefined;
  private target: { port: number; host: string };

  private constructor(
    private readonly server: Server,
    readonly port: number,
    targetPort: number,
    targetHost: string,
  ) {
    this.target = { port: targetPort, host: targetHost };
  }

  static async start(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => {
      if (!proxy || proxy.cutOff) {
        client.destroy();
        return;
      }
      const self = proxy;
      self.track(client);
      const { port, host } = self.target;
      const through = () => self.connectThrough(client, port, host);
      if (self.holes) {
        client.pause(); // the handshake "succeeded", nothing more happens
        self.pending.push(through);
      } else through();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    proxy = new TcpProxy(
      server,
      typeof address === "object" && address ? address.port : 0,
      targetPort,
      targetHost,
    );
    return proxy;
  }

  /**
   * New connections go to `port` from now on. Open ones stay with the old server (as after a virtual
   * IP moved: the old primary keeps its sessions until it goes away), unless `cutOpen`: then they are
   * closed (as a proxy that shuts the sessions of a server marked down does).
   */
  retarget(port: number, options: { host?: string; cutOpen?: boolean } = {}): void {
    this.target = { port, host: options.host ?? this.target.host };
    if (options.cutOpen) for (const s of this.sockets) s.destroy();
  }

  /** Connections open through the proxy now. */
  get openConnections(): number {
    return this.pairs.size;
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => undefined);
  }

  private connectThrough(client: Socket, targetPort: number, targetHost: string): void {
    if (client.destroyed) return;
    const upstream = connect(targetPort, targetHost);
    this.track(upstream);
    const pair = { client, upstream };
    this.pairs.add(pair);
    // Before the pipe's own listener: the matching bytes are not forwarded.
    client.on("data", (chunk: Buffer) => {
      const cut = this.cutOnData;
      if (!cut || cut.left <= 0 || !cut.pattern.test(chunk.toString("latin1"))) return;
      cut.left -= 1;
      client.destroy();
      upstream.destroy();
    });
    client.pipe(upstream);
    upstream.pipe(client);
    // A close (cut(), a crash) goes through at once; but not through a black hole.
    client.on("close", () => {
      this.pairs.delete(pair);
      if (!this.holes) upstream.destroy();
    });
    upstream.on("close", () => {
      this.pairs.delete(pair);
      if (!this.holes) client.destroy();
    });
  }

  /**
   * The next `times` connections whose client sends bytes matching `pattern` are cut right there,
   * before those bytes reach the server: a connection that drops between a request and its reply.
   */
  cutOnClientData(pattern: RegExp, times: number): void {
    this.cutOnData = { pattern, left: times };
  }

  /** How many of the cuts asked of cutOnClientData() are still to come. */
  get dataCutsLeft(): number {
    return this.cutOnData?.left ?? 0;
  }

  cut(): void {
    this.cutOff = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.cutOff = false;
  }

  /** Stops forwarding, both ways, without closing anything (see the file's header). */
  blackhole(): void {
    this.holes = true;
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /** Ends the black hole: delivers what was held back, connects the connections that waited. */
  heal(): void {
    if (!this.holes) return;
    this.holes = false;
    for (const { client, upstream } of this.pairs) {
      if (client.destroyed || upstream.destroyed) {
        client.destroy();
        upstream.destroy();
        continue;
      }
      client.pipe(upstream);
      upstream.pipe(client);
    }
    for (const through of this.pending.splice(0)) through();
  }

  async close(): Promise<void> {
    this.holes = false;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
