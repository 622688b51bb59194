// world: decoder
// {{name}}: a Corral decoder. Each raw record its input reads (a line of a tailed file,
// a syslog datagram or frame) becomes a `{{name}}` message: the record as its payload,
// its length and where it came from as fields. An empty record fails: the host counts
// it and keeps it as a `corral.decode-failure` message.

const text = new TextDecoder();

// The bytes of a span of the batch's text: `offset << 32 | length` (a BigInt).
function span(batch, s) {
  const start = Number(BigInt(s) >> 32n);
  return batch.text.subarray(start, start + Number(BigInt(s) & 0xffffffffn));
}

// Called with one or more records, in the order they were read: six numbers per record
// in `records.records` (the spans of its bytes, input, file path, its byte offset, the
// span of its peer, its receive time). Return the messages decoded and the records that
// failed, by increasing index: `{ tag: "non-fatal", val: "why" }` is counted and the next
// record decoded, `{ tag: "fatal", ... }` has the decoder terminated.
export function decode(records) {
  const messages = [];
  const failures = [];
  const words = records.records;
  for (let index = 0; index * 6 < words.length; index++) {
    const data = span(records, words[index * 6]);
    if (data.length === 0) {
      failures.push({ index, failure: { tag: "non-fatal", val: "an empty record" } });
      continue;
    }
    messages.push({
      timestamp: undefined,
      type: "{{name}}",
      logger: "",
      severity: 6,
      payload: text.decode(data),
      fields: [
        { name: "length", value: { tag: "int", val: BigInt(data.length) } },
        { name: "path", value: { tag: "string", val: text.decode(span(records, words[index * 6 + 2])) } },
        { name: "offset", value: { tag: "int", val: BigInt(words[index * 6 + 3]) } },
      ],
    });
  }
  return { messages, failures };
}

// Called every `ticker-interval-ms` (a sidecar setting) with the time in nanoseconds
// since the Unix epoch, as a BigInt.
export function timerEvent(nowNs) {}
