"""Reading a child process's log while it runs, and waiting for lines in it (no polling)."""

from __future__ import annotations

import subprocess
import sys
import threading


class LogWatch:
    """Reads a process's stderr as it comes (so the pipe never fills) and waits for lines."""

    def __init__(self, process: subprocess.Popen[bytes], label: str = "leaving") -> None:
        assert process.stderr is not None
        self.stream = process.stderr
        self.label = label
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip()
            sys.stderr.write(f"[{self.label}] {line}\n")  # shown by pytest when the test fails
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> int:
        """The index of the first line containing `text`; fails after `timeout` seconds."""
        with self.changed:
            found = self.changed.wait_for(lambda: self._index(text) is not None, timeout)
            assert found, f"{text!r} never logged; the log so far:\n" + "\n".join(self.lines)
            index = self._index(text)
            assert index is not None
            return index

    def _index(self, text: str, after: int = 0) -> int | None:
        return next((i for i, line in enumerate(self.lines) if i >= after and text in line), None)

    def wait_for_after(self, text: str, after: int, timeout: float) -> int:
        """The index of the first line at or after `after` containing `text`."""
        with self.changed:
            found = self.changed.wait_for(lambda: self._index(text, after) is not None, timeout)
            assert found, f"{text!r} never logged; the log so far:\n" + "\n".join(self.lines)
            index = self._index(text, after)
            assert index is not None
            return index

    def count(self, text: str) -> int:
        with self.changed:
            return sum(text in line for line in self.lines)

    def close(self) -> None:
        self.thread.join(timeout=10)  # EOF once the process and its children have exited
        self.stream.close()
