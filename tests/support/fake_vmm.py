"""A stand-in VMM process: answers "pong" on its control socket until killed."""

from __future__ import annotations

import os
import socket
import sys


def main(path: str) -> None:
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
    main(sys.argv[1])
