"""An httpx client that checks every JSON response against Qdrant's OpenAPI schema."""

from __future__ import annotations

import httpx


class ValidatingClient(httpx.Client):
    """httpx client whose every JSON response is checked against Qdrant's OpenAPI schema."""

    def request(self, method: str, url, *args, **kwargs):  # type: ignore[override]
        from openapi_contract import validate_response  # jsonschema: only where validating

        resp = super().request(method, url, *args, **kwargs)
        body = None
        if resp.headers.get("content-type", "").startswith("application/json"):
            body = resp.json()
        validate_response(method, resp.request.url.path, resp.status_code, body)
        return resp
