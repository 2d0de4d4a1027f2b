/**
 * Line splitting of agents' NDJSON answers (pull and push progress), written once for every
 * reader of such answers.
 */

/** Longest line accepted by default: progress lines are a few hundred bytes. */
const MAX_LINE = 1024 * 1024;

/**
 * The lines of a UTF-8 byte stream, without their `\n` or `\r\n`, as they complete; characters
 * split between chunks are decoded whole, and a last line without a newline is yielded too.
 * Throws a RangeError when a line grows past `maxLength` characters, so an agent that never ends
 * its line cannot fill the coordinator's memory.
 */
export async function* readLines(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: { maxLength?: number } = {},
): AsyncGenerator<string> {
  const max = options.maxLength ?? MAX_LINE;
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of source) {
    pending += decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let nl = pending.indexOf("\n"); nl !== -1; nl = pending.indexOf("\n", start)) {
      const end = nl > start && pending.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      yield pending.slice(start, end);
      start = nl + 1;
    }
    pending = pending.slice(start);
    if (pending.length > max) {
      throw new RangeError(`Cannot read the answer: a line is longer than ${max} characters`);
    }
  }
  pending += decoder.decode();
  if (pending) yield pending;
}
