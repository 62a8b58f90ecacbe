/**
 * Reading CPU time and memory from /proc: of the processes in the router namespace (the
 * system under test) and of the whole machine. Pure parsers plus thin readers.
 * @module
 */

/** The middle value (the mean of the two middle ones for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The `q`-quantile (0..1) of values sorted ascending, nearest rank; NaN for none. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
export const CLOCK_TICKS = 100;

/** utime + stime, in ticks, from the text of `/proc/<pid>/stat` (all threads together). */
export function parseStatCpuTicks(stat: string): number {
  // The command name is parenthesised and may hold spaces: fields count from after it.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return Number(rest[11]) + Number(rest[12]);
}

/** VmRSS in KiB from the text of `/proc/<pid>/status`, 0 when absent (a kernel thread). */
export function parseStatusRssKiB(status: string): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) : 0;
}

/** Busy and total ticks of all CPUs from the text of `/proc/stat`. */
export function parseProcStat(text: string): { busy: number; total: number } {
  const line = text.split("\n").find((l) => l.startsWith("cpu "));
  if (line === undefined) throw new Error("no aggregate cpu line in /proc/stat");
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - v[3] - v[4], total };
}

function readOr(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** CPU seconds used so far by the processes `pids` (a process gone since counts 0). */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readOr(`/proc/${pid}/stat`);
    if (stat) ticks += parseStatCpuTicks(stat);
  }
  return ticks / CLOCK_TICKS;
}

/** Resident memory of the processes `pids`, in KiB. */
export function rssKiB(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + parseStatusRssKiB(readOr(`/proc/${pid}/status`)), 0);
}

/** Busy CPU seconds of the whole machine so far (every core, user + system + interrupts). */
export function machineBusySeconds(): number {
  return parseProcStat(Deno.readTextFileSync("/proc/stat")).busy / CLOCK_TICKS;
}
