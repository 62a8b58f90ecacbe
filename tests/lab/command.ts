/**
 * Running external programs, optionally inside a network namespace, with a deadline.
 *
 * Every lab action is a real command (ip, iptables, nginx, curl, ...); this module is the one
 * place that spawns them so that every wait is bounded and failures name the command.
 * @module
 */

/** What a finished command produced. */
export interface CommandResult {
  /** Exit status; 124 when the deadline killed it (like coreutils `timeout`). */
  code: number;
  stdout: string;
  stderr: string;
  /** True when the deadline expired and the process was killed. */
  timedOut: boolean;
}

/** Options for {@linkcode run}. */
export interface RunOptions {
  /** Network namespace to run in (via `ip netns exec`), or the root namespace when absent. */
  ns?: string;
  /** Bytes or text written to standard input, which is then closed. */
  stdin?: string | Uint8Array;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Deadline in milliseconds (default 60 s); the process is killed when it expires. */
  timeoutMs?: number;
  /** Working directory. */
  cwd?: string;
  /** Throw a {@linkcode CommandError} when the exit status is not 0 (default true). */
  check?: boolean;
}

/** A command that failed while the caller required success; the message names the command. */
export class CommandError extends Error {
  /** The failed command's result. */
  readonly result: CommandResult;
  constructor(argv: readonly string[], result: CommandResult) {
    const detail = (result.stderr || result.stdout).trim().split("\n").slice(-5).join("\n");
    super(
      `command failed (${result.timedOut ? "timed out" : `exit ${result.code}`}): ${
        argv.join(" ")
      }${detail ? `\n${detail}` : ""}`,
    );
    this.name = "CommandError";
    this.result = result;
  }
}

/** The argv that runs `argv` inside namespace `ns` (or unchanged when `ns` is undefined). */
export function inNamespace(ns: string | undefined, argv: readonly string[]): string[] {
  return ns === undefined ? [...argv] : ["ip", "netns", "exec", ns, ...argv];
}

/** Runs a command to completion with a deadline and returns its exit status and output. */
export async function run(
  argv: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  const full = inNamespace(options.ns, argv);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let result: CommandResult;
  try {
    const child = new Deno.Command(full[0], {
      args: full.slice(1),
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
      cwd: options.cwd,
      signal: controller.signal,
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      const bytes = typeof options.stdin === "string"
        ? new TextEncoder().encode(options.stdin)
        : options.stdin;
      // A child that exits without reading its input must not turn into an unhandled rejection.
      await writer.write(bytes).catch(() => {});
      await writer.close().catch(() => {});
    }
    const out = await child.output();
    const timedOut = controller.signal.aborted;
    result = {
      code: timedOut ? 124 : out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
      timedOut,
    };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      result = { code: 127, stdout: "", stderr: `${full[0]}: not found`, timedOut: false };
    } else {
      throw error;
    }
  } finally {
    clearTimeout(timer);
  }
  if ((options.check ?? true) && result.code !== 0) throw new CommandError(full, result);
  return result;
}

/** True when `name` is an executable found on PATH. */
export async function haveCommand(name: string): Promise<boolean> {
  const result = await run(["sh", "-c", `command -v "$1"`, "sh", name], { check: false });
  return result.code === 0;
}

/**
 * Starts a long-running program detached from this process (it survives our exit, for
 * `--keep`), with stdout and stderr appended to `logFile` and its pid written to `pidFile`.
 */
export async function spawnDetached(
  argv: readonly string[],
  { ns, logFile, pidFile, env }: {
    ns?: string;
    logFile: string;
    pidFile: string;
    env?: Record<string, string>;
  },
): Promise<number> {
  const full = inNamespace(ns, argv);
  // `exec` keeps the pid: the pid file names the very process that ends up running `argv`
  // (`ip netns exec` itself execs the program).
  const script = `echo $$ > "$1"; log="$2"; shift 2; exec "$@" >>"$log" 2>&1 </dev/null`;
  await run(["setsid", "-f", "sh", "-c", script, "sh", pidFile, logFile, ...full], {
    env,
    timeoutMs: 10_000,
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(pidFile).catch(() => "");
    const pid = Number.parseInt(text.trim(), 10);
    if (Number.isInteger(pid) && pid > 0) return pid;
    await sleep(20);
  }
  throw new Error(`no pid written to ${pidFile} for: ${full.join(" ")}`);
}

/** True while a process with this pid exists (and is not a zombie). */
export function processAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Field 3 (after the parenthesised command name) is the state; Z is a zombie.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Sends SIGTERM, waits up to `graceMs` for the process to go, then SIGKILLs it. */
export async function terminate(pid: number, graceMs = 5_000): Promise<void> {
  if (!processAlive(pid)) return;
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!processAlive(pid)) return;
    await sleep(25);
  }
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
