"""`notify:`: the webhooks that hear about deploys, rollbacks, failures, quarantines,
corrected drift and watch mode backing off or giving up (reconciler/engine/notify.py sends).

The URL may be written as ${NAME} (Slack's carry their token in the path), and a header's
value comes from the environment: both are secret, and checked here like every input, each
problem located at its field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from reconciler.errors import InputProblem
from reconciler.spec.model import EVENTS, Webhook
from reconciler.spec.secrets import interpolate
from reconciler.spec.yaml_source import SourceDoc


def resolve(doc: SourceDoc, environ: Mapping[str, str]) -> tuple[tuple[Webhook, ...], list[InputProblem]]:
    entries: Any = doc.data.get("notify") or []
    hooks: list[Webhook] = []
    problems: list[InputProblem] = []
    for index, entry in enumerate(entries):
        at: tuple[str | int, ...] = ("notify", index)
        url, why = _url(entry["url"], environ)
        if why:
            problems.append(doc.problem((*at, "url"), why))
        header = None
        if entry.get("header"):
            var = entry["header"]["from_env"]
            value = environ.get(var)
            if value is None:
                why = f"the environment variable {var} is not set where reconcile runs"
                problems.append(doc.problem((*at, "header", "from_env"), why))
            elif any(ord(c) < 32 or ord(c) == 127 for c in value):
                why = f"the value of {var} contains a line break or control character; a header cannot"
                problems.append(doc.problem((*at, "header", "from_env"), why))
            else:
                header = (str(entry["header"]["name"]), value)
        if url is None or why:
            continue
        hooks.append(
            Webhook(
                url=url,
                label=f"webhook {index + 1} ({urlsplit(url).hostname})",
                header=header,
                format=cast(Literal["json", "slack"], entry.get("format", "json")),
                events=frozenset(entry.get("events") or EVENTS),
                timeout=float(entry.get("timeout", 5)),
                retries=int(entry.get("retries", 3)),
            )
        )
    return tuple(hooks), problems


def _url(text: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    url, used, missing = interpolate(text, environ)
    if missing:
        return None, f"the environment variable {', '.join(missing)} is not set where reconcile runs"
    # Quote the URL only when it was written out: one from the environment may hold a token.
    shown = "the URL" if used else repr(url)
    if re.search(r"[\x00-\x20\x7f]", url):
        return None, f"{shown} contains a space or control character"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, f"expected an http:// or https:// URL with a host name; got {shown}"
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None, f"{shown} has a malformed port"
    return url, None
