/**
 * A build command that records its runs, for tests that must show two runs of a build never
 * overlapped: each run appends "start <lease> <pid> <ns>" to runs.log (and "overlap <pid>" for every
 * earlier run whose process is still alive at that moment), and "end <lease> <pid> <ns>" when it ends.
 *
 * The first run of the directory is long (it waits for SIGTERM; on SIGTERM it takes TERM_DELAY
 * seconds to exit, then records its end; a SIGKILL leaves no end line); every later run ends at once
 * with `::result {"run": n}`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const SCRIPT = `
log="$RUN_DIR/runs.log"
# A zombie (a killed process nobody reaped yet) does not run: /proc tells it apart.
for p in $(cat "$RUN_DIR/pids" 2>/dev/null); do
  state=$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)
  if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]; then echo "overlap $p $(date +%s%N)" >> "$log"; fi
done
echo $$ >> "$RUN_DIR/pids"
echo "start $OCULUS_BUILD_LEASE $$ $(date +%s%N)" >> "$log"
if [ -e "$RUN_DIR/first-run" ]; then
  echo "end $OCULUS_BUILD_LEASE $$ $(date +%s%N)" >> "$log"
  echo "::result {\\"run\\": $(grep -c '^start' "$log")}"
  exit 0
fi
touch "$RUN_DIR/first-run"
trap 'sleep "$TERM_DELAY"; echo "end $OCULUS_BUILD_LEASE $$ $(date +%s%N)" >> "$log"; exit 143' TERM
sleep 120 &
wait $!
`;

export interface RunRecord {
  kind: "start" | "end" | "overlap";
  lease: number;
  pid: number;
  atNs: bigint;
}

export class RunLog {
  readonly dir = mkdtempSync(path.join(tmpdir(), "oculus-runs-"));
  readonly script = path.join(this.dir, "build.sh");

  constructor(readonly termDelaySeconds = 0) {
    writeFileSync(this.script, SCRIPT);
  }

  /** The command line and environment for commandHandler. */
  get command(): string {
    return `/bin/sh ${this.script}`;
  }

  get env(): NodeJS.ProcessEnv {
    return { ...process.env, RUN_DIR: this.dir, TERM_DELAY: String(this.termDelaySeconds) };
  }

  records(): RunRecord[] {
    let text = "";
    try {
      text = readFileSync(path.join(this.dir, "runs.log"), "utf8");
    } catch {
      return [];
    }
    return text
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const [kind, a, b, c] = line.split(" ");
        if (kind === "overlap") return { kind, lease: 0, pid: Number(a), atNs: BigInt(b ?? 0) };
        return { kind: kind as RunRecord["kind"], lease: Number(a), pid: Number(b), atNs: BigInt(c ?? 0) };
      });
  }

  starts(): RunRecord[] {
    return this.records().filter((r) => r.kind === "start");
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
