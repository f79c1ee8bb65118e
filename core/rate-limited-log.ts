// At most one line per key (e.g. a peer address) per window: for events a
// misconfigured or hostile peer repeats many times a second (a rejected TLS
// handshake on every reconnect). What was held back is counted on the next line.
export function rateLimitedLog(log: (line: string) => void, windowMs = 10_000, maxKeys = 1000): (key: string, line: string) => void {
  const seen = new Map<string, { at: number; suppressed: number }>();
  return (key, line) => {
    const now = Date.now();
    const s = seen.get(key);
    if (s && now - s.at < windowMs) {
      s.suppressed++;
      return;
    }
    // Many distinct peers: forget the stalest first (Map keeps insertion order).
    if (!s && seen.size >= maxKeys) seen.delete(seen.keys().next().value!);
    const held = s?.suppressed ? ` (${s.suppressed} more from ${key} not logged in the ${windowMs / 1000} s before)` : '';
    seen.delete(key);
    seen.set(key, { at: now, suppressed: 0 });
    log(line + held);
  };
}
