/**
 * A TCP proxy in front of a real server, to cut a client's connection for real: `cut()` destroys every
 * open connection and refuses new ones (as a lost network does), `restore()` lets them through again.
 * `blackhole()` is the nastier fault: a link that silently stops delivering, without closing anything
 * (a dead route, a firewall dropping packets, a frozen peer). Connections stay open, new ones are
 * accepted but not connected through, and nothing is forwarded either way; `heal()` delivers what
 * was held back (as TCP retransmits would once the route is back) and forwards again.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

/** One direction of a proxied connection, held back while the proxy is a black hole. */
class Forwarder {
  private held: (Buffer | "end")[] = [];

  constructor(
    private readonly to: Socket,
    private readonly blackholed: () => boolean,
  ) {}

  push(item: Buffer | "end"): void {
    if (this.blackholed() || this.held.length > 0) this.held.push(item);
    else this.deliver(item);
  }

  flush(): void {
    const held = this.held;
    this.held = [];
    for (const item of held) this.deliver(item);
  }

  private deliver(item: Buffer | "end"): void {
    if (this.to.destroyed) return;
    if (item === "end") this.to.end();
    else this.to.write(item);
  }
}

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly forwarders = new Set<Forwarder>();
  /** Connections accepted while the proxy is a black hole: connected through on heal(). */
  private readonly pending: (() => void)[] = [];
  private cutOff = false;
  private holes = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => {
      if (!proxy || proxy.cutOff) {
        client.destroy();
        return;
      }
      const self = proxy;
      self.track(client);
      const through = () => self.connectThrough(client, targetPort, targetHost);
      if (self.holes) {
        client.pause(); // the handshake "succeeded", nothing more happens
        self.pending.push(through);
      } else through();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    proxy = new TcpProxy(server, typeof address === "object" && address ? address.port : 0);
    return proxy;
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
    const blackholed = () => this.holes;
    const toUpstream = new Forwarder(upstream, blackholed);
    const toClient = new Forwarder(client, blackholed);
    this.forwarders.add(toUpstream).add(toClient);
    client.on("data", (chunk: Buffer) => toUpstream.push(chunk));
    upstream.on("data", (chunk: Buffer) => toClient.push(chunk));
    client.on("end", () => toUpstream.push("end"));
    upstream.on("end", () => toClient.push("end"));
    // A reset (cut(), a crash) goes through at once; but not through a black hole.
    const closeOther = (other: Socket) => () => {
      if (!this.holes) other.destroy();
    };
    client.on("close", closeOther(upstream));
    upstream.on("close", closeOther(client));
    client.on("close", () => this.forwarders.delete(toUpstream));
    upstream.on("close", () => this.forwarders.delete(toClient));
    client.resume();
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
  }

  /** Ends the black hole: delivers what was held back, connects the connections that waited. */
  heal(): void {
    this.holes = false;
    for (const forwarder of this.forwarders) forwarder.flush();
    for (const through of this.pending.splice(0)) through();
  }

  async close(): Promise<void> {
    this.holes = false;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
