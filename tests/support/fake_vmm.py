"""A stand-in VMM process: answers "pong" on its control socket until killed.

An optional second argument is a number of bytes of "console output" it
writes to stdout first (a chatty guest, for the log cap tests).
"""

from __future__ import annotations

import os
import socket
import sys


def main(path: str, chatter: int = 0) -> None:
    line = b"guest console line that goes on and on\n"
    sys.stdout.buffer.write((line * (chatter // len(line) + 1))[:chatter])
    sys.stdout.flush()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    while True:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"pong")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
