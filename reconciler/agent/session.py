"""A resident agent for a connection that stays open (watch mode): one exec serves request
after request, so a pass costs a round trip on the channel, not a new python3 and a fresh
compile of every module.

stdin carries JSON lines: a request, or {"cancel": true} while a request runs. Each request
is answered as in one-shot mode (progress events, then one final event) and the agent waits
for the next. EOF ends it. Requests with a payload (uploads) are not served here: the
controller sends those the one-shot way, which streams the payload after the request.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading

from .main import LineEmitter, handle
from .protocol import Json


def serve() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # finish the current action if the link drops
    emit = LineEmitter()
    gone = emit.gone
    cancel = threading.Event()
    requests: queue.Queue[Json | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin.buffer:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("cancel"):
                cancel.set()
            elif isinstance(message, dict):
                requests.put(message)
        gone.set()  # EOF: the client closed the channel
        requests.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        request = requests.get()
        if request is None:
            break
        cancel.clear()
        if request.get("payload_size"):
            emit({"event": "error", "error": "payloads go the one-shot way", "code": "protocol"})
            continue
        emit(handle(request, None, emit, lambda: cancel.is_set() or gone.is_set()))
    sys.stdout.flush()
    os._exit(0)  # the reader thread may still hold stdin
