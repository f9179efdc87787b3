"""A tiny OpenID Connect provider for the dashboard's login tests: /authorize approves at once (the person
is "logged in" as the test says) and sends the browser back with a code; /token checks the PKCE verifier and
the client secret, and answers an access token signed with the tests' key (tests/conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse

SECRET = "secret-of-the-dashboard"


def fake_idp(make_token: Any, roles: list[str], client_secret: str = SECRET) -> FastAPI:
    app = FastAPI()
    codes: dict[str, dict[str, str]] = {}
    app.state.tokens_issued = 0

    @app.get("/authorize")
    def authorize(
        redirect_uri: str, state: str, code_challenge: str, code_challenge_method: str = Query(...),
        client_id: str = Query(...), response_type: str = Query(...), nonce: str | None = None,
    ) -> RedirectResponse:  # fmt: skip
        assert response_type == "code" and code_challenge_method == "S256"
        code = secrets.token_urlsafe(16)
        codes[code] = {"challenge": code_challenge, "redirect_uri": redirect_uri, "client_id": client_id}
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

    @app.post("/token")
    def token(
        request: Request, code: str = Form(...), code_verifier: str = Form(...), redirect_uri: str = Form(...),
        grant_type: str = Form(...),
    ) -> JSONResponse:  # fmt: skip
        # the client authenticates with HTTP Basic (client_secret_basic, authlib's default)
        basic = request.headers.get("authorization", "").removeprefix("Basic ")
        given = base64.b64decode(basic).decode().partition(":")[2] if basic else None
        issued = codes.pop(code, None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if (issued is None or grant_type != "authorization_code" or issued["challenge"] != challenge
                or issued["redirect_uri"] != redirect_uri or given != client_secret):  # fmt: skip
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        app.state.tokens_issued += 1
        return JSONResponse({"access_token": make_token(roles=roles), "token_type": "Bearer", "expires_in": 300})

    return app
