// Reports each distinct message once (at most `cap` of them): for failures that can repeat on
// every step or scrape, where one line says all there is to say and a flood would hide the rest.
export function logOnce(log: (line: string) => void, cap = 100): (msg: string) => void {
  const seen = new Set<string>();
  return (msg) => {
    if (seen.has(msg) || seen.size >= cap) return;
    seen.add(msg);
    log(msg);
  };
}
