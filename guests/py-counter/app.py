# world: stateful-filter
"""Example plugin in Python: the Rust `counter` again.

Counts messages per type in the plugin's store and, on every timer event, emits one
`counter.totals` message with a field per type. The payload is the number of messages
this plugin has processed, kept in memory and handed to the next version on a hot swap
through the `state` export.
"""

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import emit, store, types

PREFIX = "count/"

processed = 0


def read(key: str) -> int:
    try:
        raw = store.get(key)
    except Err as e:
        raise Err(types.Failure_NonFatal(f"store get: {e.value}"))
    return int.from_bytes(raw, "little", signed=True) if raw else 0


class WitWorld(wit_world.WitWorld):
    def process_message(self, message: types.Message) -> None:
        global processed
        key = PREFIX + message.type()
        count = read(key) + 1
        try:
            store.set(key, count.to_bytes(8, "little", signed=True))
        except Err as e:
            raise Err(types.Failure_NonFatal(f"store set: {e.value}"))
        processed += 1

    def timer_event(self, now_ns: int) -> None:
        try:
            keys = store.list_keys(PREFIX)
        except Err as e:
            raise Err(types.Failure_NonFatal(f"store list: {e.value}"))
        fields = [types.Field(key[len(PREFIX) :], types.Value_Int(read(key))) for key in keys]
        emit.emit(types.OutMessage(None, "counter.totals", "", 6, str(processed), fields))


class State(exports.State):
    def save(self) -> bytes:
        return str(processed).encode()

    def restore(self, data: bytes) -> None:
        global processed
        try:
            processed = int(data.decode())
        except ValueError:
            raise Err(f"not a count: {data!r}")
