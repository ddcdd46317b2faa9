"""The host agent's registry client, in the parts a real registry cannot show: how a challenge
is read, and that credentials never follow a redirect to another host. The flows themselves
run against real registries in tests/test_registry.py (Basic) and tests/test_token_registry.py
(Bearer)."""

from __future__ import annotations

import email.message
import io
import urllib.request

from reconciler.agent.registry import _SameHostRedirects, challenge_params


def test_a_bearer_challenge_is_read_with_its_scope_and_error() -> None:
    challenge = (
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
        'scope="repository:acme/app:pull",error="insufficient_scope"'
    )
    assert challenge_params(challenge) == (
        "bearer",
        {
            "realm": "https://ghcr.io/token",
            "service": "ghcr.io",
            "scope": "repository:acme/app:pull",
            "error": "insufficient_scope",
        },
    )
    assert challenge_params('Basic realm="registry"') == ("basic", {"realm": "registry"})
    assert challenge_params("") == ("", {})


def _redirect(to: str) -> urllib.request.Request | None:
    request = urllib.request.Request(
        "https://registry.example/token?scope=x", headers={"Authorization": "Basic c2VjcmV0"}
    )
    headers = email.message.Message()
    return _SameHostRedirects().redirect_request(request, io.BytesIO(), 302, "Found", headers, to)  # type: ignore[arg-type]


def test_credentials_follow_a_redirect_only_to_the_same_host() -> None:
    same = _redirect("https://registry.example/other-token")
    assert same is not None and same.get_header("Authorization") == "Basic c2VjcmV0"
    away = _redirect("https://elsewhere.example/token")
    assert away is not None and away.get_header("Authorization") is None
    port = _redirect("https://registry.example:8443/token")
    assert port is not None and port.get_header("Authorization") is None
