# world: decoder
"""{{name}}: a Corral decoder. Each raw record its input reads (a line of a tailed
file, a syslog datagram or frame) becomes a `{{name}}` message: the record as its
payload, its length and where it came from as fields. An empty record fails: the host
counts it and keeps it as a `corral.decode-failure` message."""

import wit_world
from wit_world.imports import types


def span(batch: types.RawBatch, span: int) -> bytes:
    """The bytes of a span of the batch's text: `offset << 32 | length`."""
    start = span >> 32
    return batch.text[start : start + (span & 0xFFFFFFFF)]


class WitWorld(wit_world.WitWorld):
    def decode(self, records: types.RawBatch) -> types.Decoded:
        """Called with one or more records, in the order they were read: six numbers
        per record in `records.records` (the spans of its bytes, input, file path, its
        byte offset, the span of its peer, its receive time). Return the messages
        decoded and the records that failed, by increasing index: `Failure_NonFatal` is
        counted and the next record decoded, `Failure_Fatal` has the decoder terminated.
        """
        messages, failures = [], []
        words = records.records
        for index in range(len(words) // 6):
            data = span(records, words[index * 6])
            if not data:
                failures.append(types.BatchFailure(index, types.Failure_NonFatal("an empty record")))
                continue
            path = span(records, words[index * 6 + 2]).decode("utf-8", "replace")
            fields = [
                types.Field("length", types.Value_Int(len(data))),
                types.Field("path", types.Value_String(path)),
                types.Field("offset", types.Value_Int(words[index * 6 + 3])),
            ]
            payload = data.decode("utf-8", "replace")
            messages.append(types.OutMessage(None, "{{name}}", "", 6, payload, fields))
        return types.Decoded(messages, failures)

    def timer_event(self, now_ns: int) -> None:
        """Called every `ticker-interval-ms` (a sidecar setting) with the time in
        nanoseconds since the Unix epoch."""
