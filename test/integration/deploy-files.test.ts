/**
 * deploy/docker-compose.yml names commands, flags and environment variables of this product: they
 * must exist (the built `oculus` accepts every flag it passes) and be documented (README's
 * configuration table names every OCULUS_ variable it sets). The file itself cannot be run here (no
 * image registry), so this is what keeps it true as the CLI changes.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseRedisUrl } from "../../src/core/redis-url.js";
import { oculus } from "../helpers/oculus-cli.js";

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  profiles?: string[];
  volumes?: string[];
  depends_on?: Record<string, unknown>;
}

const composeText = readFileSync("deploy/docker-compose.yml", "utf8");
const compose = parse(composeText) as {
  services: Record<string, ComposeService>;
};
const ours = Object.entries(compose.services).filter(
  ([, s]) => s.image === "oculus:latest" && Array.isArray(s.command) && s.command[0]?.match(/^[a-z]+$/),
);

describe("deploy/docker-compose.yml", () => {
  it("runs our image for the API, a worker and the backup", () => {
    expect(ours.map(([name]) => name)).toEqual(expect.arrayContaining(["oculus", "worker", "backup"]));
  });

  it.each(ours)("%s: every flag it passes is one the command accepts", async (_name, service) => {
    const command = service.command ?? [];
    const subcommand = command[0] as string;
    const help = await oculus([subcommand, "--help"]);
    expect(help.code).toBe(0);
    for (const flag of command.filter((arg) => arg.startsWith("--"))) {
      expect(help.stdout).toContain(flag);
    }
  });

  it("every OCULUS_ variable it sets is in the README's configuration table", () => {
    const readme = readFileSync("README.md", "utf8");
    const names = Object.values(compose.services).flatMap((s) =>
      Object.keys(s.environment ?? {}).filter((name) => name.startsWith("OCULUS_")),
    );
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(readme).toContain(`\`${name}\``);
  });
});

describe("deploy/docker-compose.yml, profile sentinel", () => {
  const inProfile = Object.entries(compose.services).filter(([, s]) => s.profiles?.includes("sentinel"));
  const sentinels = inProfile.filter(([, s]) => s.command?.join("\n").includes("--sentinel"));
  const script = sentinels[0]?.[1].command?.join("\n") ?? "";
  const monitor = /sentinel monitor (\S+) (\S+) (\d+) (\d+)/.exec(script);

  it("has a replica of `redis` and three sentinels (quorum 2) monitoring it", () => {
    const replica = inProfile.find(([, s]) => s.command?.includes("--replicaof"));
    expect(replica?.[1].command?.join(" ")).toContain("--replicaof redis 6379");
    expect(sentinels.map(([name]) => name)).toEqual(["sentinel-1", "sentinel-2", "sentinel-3"]);
    expect(monitor?.slice(2)).toEqual(["redis", "6379", "2"]);
    // Every sentinel runs the same script (the YAML anchor), with the master's password.
    for (const [, s] of sentinels) expect(s.command?.join("\n")).toBe(script);
    expect(script).toMatch(/sentinel auth-pass \S+ \$\$REDIS_PASSWORD/);
    // The master can follow a promoted replica: it has the password of the others.
    expect(compose.services.redis?.command).toContain("--masterauth");
  });

  it("documents an OCULUS_REDIS_URL that names those sentinels and that master", () => {
    const documented = /OCULUS_REDIS_URL="([^"]+)"/.exec(composeText)?.[1] ?? "";
    const target = parseRedisUrl(documented.replace("$REDIS_PASSWORD", "pw"));
    expect(target.topology).toBe("sentinel");
    expect(target.masterName).toBe(monitor?.[1]);
    expect(target.nodes).toEqual(sentinels.map(([name]) => ({ host: name, port: 26379 })));
    for (const name of ["oculus", "worker"]) {
      const url = compose.services[name]?.environment?.REDIS_URL ?? "";
      expect(url).toMatch(/^\$\{OCULUS_REDIS_URL:-redis:\/\//);
    }
  });
});

describe("deploy/docker-compose.yml, backups of every profile", () => {
  const services = Object.entries(compose.services);
  /** Redis data nodes (not sentinels): every profile's. */
  const dataNodes = services.filter(
    ([, s]) => s.image?.startsWith("redis:") && !s.command?.join("\n").includes("--sentinel"),
  );
  const backups = ours.filter(([, s]) => s.command?.[0] === "backup");
  const dataVolume = (s: ComposeService) =>
    s.volumes?.find((v) => v.split(":")[1] === "/data")?.split(":")[0] as string;

  it("backs up each data node over a plain redis:// URL of that node, with that node's volume at /data", () => {
    expect(dataNodes.map(([name]) => name)).toEqual(["redis", "redis-replica"]);
    for (const [node, service] of dataNodes) {
      const backup = backups.find(
        ([, b]) =>
          parseRedisUrl((b.environment?.REDIS_URL ?? "").replace(/\$\{[^}]+\}/g, "pw")).nodes[0]?.host ===
          node,
      );
      expect(backup, `a backup service for ${node}`).toBeDefined();
      const [, b] = backup as [string, ComposeService];
      // Never the Sentinel URL: the master it resolves moves, the mounted volume does not.
      expect(b.environment?.REDIS_URL).toMatch(/^redis:\/\//);
      expect(b.volumes).toContain(`${dataVolume(service)}:/data:ro`);
      expect(b.profiles).toEqual(["ops"]);
      expect(b.command).toContain("--pg-dump");
    }
    // Each writes its own backup directories (and their retention) apart from the others'.
    const dests = backups.map(([, b]) => b.command?.[(b.command?.indexOf("--dest") ?? 0) + 1]);
    expect(new Set(dests).size).toBe(backups.length);
  });

  it("an `ops` service depends on no service of another profile (that would make `--profile ops` invalid)", () => {
    for (const [name, s] of services.filter(([, s]) => s.profiles?.includes("ops"))) {
      for (const dependency of Object.keys(s.depends_on ?? {})) {
        const profiles = compose.services[dependency]?.profiles;
        expect(profiles === undefined || profiles.includes("ops"), `${name} -> ${dependency}`).toBe(true);
      }
    }
  });
});
