/**
 * A one-connection client for the hardening tests: sends its steps in order, each in its own
 * write, optionally waiting for a given text to arrive before the next step (so "two writes"
 * really means a second request sent after the first answer), then reads to the end.
 *
 * Reads a JSON {@linkcode Plan} on stdin and prints a JSON {@linkcode Report} on stdout with
 * everything received (as latin1 text, bounded), so the test can see every response on a
 * kept-alive or pipelined connection, in order.
 * @module
 */

/** One write, and what must arrive before the next one. */
export interface Step {
  /** Bytes to send, base64. */
  send: string;
  /** Wait until this text has arrived after this step's write (bounded by the deadline). */
  waitFor?: string;
  /**
   * Before writing, wait until this file exists (bounded by the deadline): lets a test do
   * something between two requests on one connection, e.g. reload the proxy.
   */
  waitForFile?: string;
}

/** What to do. */
export interface Plan {
  host: string;
  port: number;
  steps: Step[];
  /** Shut down the sending side after the last step (default false). */
  closeWrite?: boolean;
  /** Overall read deadline (default 10 s). */
  readDeadlineMs?: number;
  /** Keep at most this many received bytes in the report (default 256 KiB). */
  maxBytes?: number;
}

/** What happened. */
export interface Report {
  connected: boolean;
  localPort?: number;
  /** Received bytes, latin1-decoded, at most `maxBytes` of them. */
  text: string;
  /** Total bytes received. */
  received: number;
  /** How reading ended. */
  end: "eof" | "reset" | "deadline" | "error";
  /** Steps whose `waitFor` text never came. */
  missedWaits: number[];
  error?: string;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

function fromB64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

async function main(): Promise<Report> {
  const plan = JSON.parse(await new Response(Deno.stdin.readable).text()) as Plan;
  const maxBytes = plan.maxBytes ?? 256 * 1024;
  const report: Report = {
    connected: false,
    text: "",
    received: 0,
    end: "error",
    missedWaits: [],
  };
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: plan.host, port: plan.port });
  } catch (error) {
    report.error = String(error);
    return report;
  }
  report.connected = true;
  report.localPort = conn.localAddr.port;
  conn.setNoDelay(true);
  let deadlinePassed = false;
  const deadline = setTimeout(() => {
    deadlinePassed = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, plan.readDeadlineMs ?? 10_000);

  let wake: (() => void) | undefined;
  let ended = false;
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) {
          report.end = deadlinePassed ? "deadline" : "eof";
          break;
        }
        report.received += n;
        if (report.text.length < maxBytes) {
          report.text += new TextDecoder("latin1").decode(
            buf.subarray(0, Math.min(n, maxBytes - report.text.length)),
          );
        }
        wake?.();
      }
    } catch (error) {
      if (deadlinePassed) report.end = "deadline";
      else {
        report.end = error instanceof Deno.errors.ConnectionReset ? "reset" : "error";
        report.error = String(error);
      }
    } finally {
      ended = true;
      wake?.();
    }
  })();

  try {
    for (const [i, step] of plan.steps.entries()) {
      if (step.waitForFile !== undefined) {
        while (!ended && !(await exists(step.waitForFile))) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      const from = report.text.length;
      await conn.write(fromB64(step.send));
      if (step.waitFor === undefined) continue;
      while (!report.text.includes(step.waitFor, from) && !ended) {
        await new Promise<void>((resolve) => wake = resolve);
      }
      if (!report.text.includes(step.waitFor, from)) report.missedWaits.push(i);
    }
    if (plan.closeWrite) await conn.closeWrite();
  } catch (error) {
    // The proxy may close while we still write: what we read tells the story.
    report.error ??= `write: ${error}`;
  }
  await reading;
  clearTimeout(deadline);
  try {
    conn.close();
  } catch {
    // Already closed.
  }
  return report;
}

if (import.meta.main) {
  console.log(JSON.stringify(await main()));
  Deno.exit(0);
}
