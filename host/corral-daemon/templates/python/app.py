# world: filter
"""{{name}}: a Corral plugin. It logs each message it is given and emits a
`{{name}}.seen` message naming its type."""

import wit_world
from wit_world.imports import emit, log, types


class WitWorld(wit_world.WitWorld):
    def process_message(self, message: types.Message) -> None:
        """Called for each message the sidecar's [matcher] lets through.

        Raise `componentize_py_types.Err(types.Failure_NonFatal("why"))` to count a
        failure and go on, `Failure_Fatal` to have the plugin terminated; any other
        exception, or a broken limit, ends the call too.
        """
        type_ = message.type()
        log.log(log.Level.INFO, f"seen a {type_} message")
        fields = [types.Field("type", types.Value_String(type_))]
        emit.emit(types.OutMessage(None, "{{name}}.seen", "", 6, "", fields))

    def timer_event(self, now_ns: int) -> None:
        """Called every `ticker-interval-ms` (a sidecar setting) with the time in
        nanoseconds since the Unix epoch."""
