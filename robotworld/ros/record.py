"""``robotworld bridge --record FILE.mcap``: every message in and out, for replay in Foxglove.

Written with the ``mcap`` library: each message as rclpy serializes it (CDR), under a ros2msg schema
built from the ``.msg`` files the ROS 2 wheels install; the file goes to ``FILE.mcap.part`` and is renamed when the node stops,
so a file by the final name is always complete. Read back with ``mcap_ros2.reader``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring"}
_RULE = "=" * 80


def _msg_file(datatype: str) -> Path:
    pkg, name = datatype.replace("/msg/", "/").split("/")
    prefixes = [sys.prefix, *(p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p)]
    for root in (Path(p) / "share" for p in prefixes):
        f = root / pkg / "msg" / f"{name}.msg"
        if f.exists():
            return f
    raise FileNotFoundError(f"no definition of {datatype} (looked in {sys.prefix}/share)")


def msgdef(datatype: str) -> str:
    """The ros2msg schema text of a type ('sensor_msgs/msg/JointState'): its definition, then
    each type it uses, once, after a rule line and 'MSG: pkg/Type'."""
    pkg = datatype.split("/")[0]
    main = _msg_file(datatype).read_text()
    out, seen, todo = [main], set(), _deps(main, pkg)
    while todo:
        t = todo.pop(0)
        if t in seen:
            continue
        seen.add(t)
        text = _msg_file(t).read_text()
        out.append(f"{_RULE}\nMSG: {t}\n{text}")
        todo += _deps(text, t.split("/")[0])
    return "\n".join(out)


def _deps(text: str, pkg: str) -> list[str]:
    deps = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line or "=" in line.split()[0]:
            continue
        parts = line.split()
        if len(parts) < 2 or "=" in parts[1]:
            continue
        base = re.sub(r"\[.*\]$", "", parts[0]).split("<=")[0]
        if base in _PRIMITIVES or base.startswith(("string<", "wstring<")):
            continue
        if base == "Header":
            base = "std_msgs/Header"
        deps.append(base if "/" in base else f"{pkg}/{base}")
    return deps


class Recorder:
    """Thread-safe MCAP writer of rclpy messages, topic by topic."""

    def __init__(self, path: str) -> None:
        from mcap.writer import Writer

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.fh = open(self.part, "wb")
        self.writer = Writer(self.fh)
        self.writer.start(profile="ros2", library="robotworld")
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.lock = threading.Lock()
        self.count = 0

    def write(self, topic: str, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        t = type(msg)
        datatype = f"{t.__module__.split('.')[0]}/msg/{t.__name__}"
        with self.lock:
            if self.writer is None:
                return
            if datatype not in self.schemas:
                self.schemas[datatype] = self.writer.register_schema(datatype, "ros2msg", msgdef(datatype).encode())
            if topic not in self.channels:
                self.channels[topic] = self.writer.register_channel(topic, "cdr", self.schemas[datatype])
            now = time.time_ns()
            self.writer.add_message(self.channels[topic], now, serialize_message(msg), now, sequence=self.count)
            self.count += 1

    def close(self) -> None:
        with self.lock:
            if self.writer is None:
                return
            self.writer.finish()
            self.fh.close()
            self.writer = None
            os.replace(self.part, self.path)
