# world: filter
"""Hostile plugin in Python, for the tests: the message type picks the misdeed."""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

hoard = []


class WitWorld(wit_world.WitWorld):
    def process_message(self, message: types.Message) -> None:
        kind = message.type()
        if kind == "spin":
            while True:
                pass
        elif kind == "hoard":
            while True:
                hoard.append(bytearray(1 << 20))
        elif kind == "raise":
            raise ValueError("an exception nobody caught")
        elif kind == "fail":
            raise Err(types.Failure_NonFatal("refused politely"))
        elif kind == "print":
            print("hello from Python")

    def timer_event(self, now_ns: int) -> None:
        pass
