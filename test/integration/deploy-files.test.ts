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
