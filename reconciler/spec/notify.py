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
from reconciler.spec.offline import Skipped
from reconciler.spec.said import Said
from reconciler.spec.secrets import interpolate, references, unset
from reconciler.spec.yaml_source import SourceDoc


def resolve(
    doc: SourceDoc, environ: Mapping[str, str], skipped: Skipped | None = None
) -> tuple[tuple[Webhook, ...], list[InputProblem]]:
    """With `skipped` (offline), variables are not read: the URL is checked only when it is
    written out, and what was not read is noted there."""
    entries: Any = doc.data.get("notify") if isinstance(doc.data, dict) else None
    hooks: list[Webhook] = []
    problems: list[InputProblem] = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        at: tuple[str | int, ...] = ("notify", index)
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue  # the schema reports it
        why: str | None = None
        if skipped is not None and references(entry["url"]):
            skipped.variables.update(references(entry["url"]))
            url = None
        else:
            url, bad = _url(entry["url"], environ)
            if bad:
                why = bad.message
                problems.append(doc.problem((*at, "url"), bad.message, bad.hint))
        header = None
        spec = entry.get("header")
        if isinstance(spec, dict) and isinstance(spec.get("from_env"), str):
            var = spec["from_env"]
            value = environ.get(var)
            if skipped is not None:
                skipped.variables.add(var)
            elif value is None:
                said = unset(var)
                why = said.message
                problems.append(doc.problem((*at, "header", "from_env"), said.message, said.hint))
            elif any(ord(c) < 32 or ord(c) == 127 for c in value):
                why = f"the value of {var} contains a line break or control character; a header cannot"
                problems.append(doc.problem((*at, "header", "from_env"), why))
            else:
                header = (str(spec.get("name")), value)
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


def _url(text: str, environ: Mapping[str, str]) -> tuple[str | None, Said | None]:
    url, used, missing = interpolate(text, environ)
    if missing:
        return None, unset(", ".join(missing))
    # Quote the URL only when it was written out: one from the environment may hold a token.
    shown = "the URL" if used else repr(url)
    if re.search(r"[\x00-\x20\x7f]", url):
        return None, Said(f"{shown} contains a space or control character")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, Said(f"expected an http:// or https:// URL with a host name; got {shown}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None, Said(f"{shown} has a malformed port")
    return url, None
