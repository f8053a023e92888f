/**
 * deploy/docker-compose.yml names commands, flags and environment variables of this product: they
 * must exist (the built `oculus` accepts every flag it passes) and be documented (README's
 * configuration table names every OCULUS_ variable it sets). The file itself cannot be run here (no
 * image registry), so this is what keeps it true as the CLI changes.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { oculus } from "../helpers/oculus-cli.js";

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
}

const compose = parse(readFileSync("deploy/docker-compose.yml", "utf8")) as {
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
