"""`/api/v1/tokens`: API tokens (admin only): list, create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from alerts.api.auth import Admin
from alerts.api.schemas_analyst import TokenCreated, TokenIn, TokenList, TokenOut
from alerts.tokens import TokenStore
from meshwatch.settings import parse_duration

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


def get_tokens(request: Request) -> TokenStore:
    return request.app.state.tokens


@router.get("", response_model=TokenList, summary="API tokens (never their secrets)")
def list_tokens(_: Admin, tokens: Annotated[TokenStore, Depends(get_tokens)]) -> TokenList:
    return TokenList(items=[TokenOut.model_validate(t.to_dict()) for t in tokens.list("api")])


@router.post("", response_model=TokenCreated, status_code=201,
             summary="Create a token; the response holds its secret, shown this once")
def create_token(body: TokenIn, principal: Admin,
                 tokens: Annotated[TokenStore, Depends(get_tokens)]) -> TokenCreated:
    ttl = None
    if body.expires_in:
        try:
            ttl = parse_duration(body.expires_in)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"expires_in: {exc}") from None
    try:
        token, secret = tokens.create(body.name, body.role, created_by=principal.name, ttl=ttl)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return TokenCreated.model_validate({**token.to_dict(), "token": secret})


@router.delete("/{token_id}", response_model=TokenOut, summary="Revoke a token (and its sessions)",
               responses={404: {"description": "No such token"}})
def revoke_token(token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")], principal: Admin,
                 tokens: Annotated[TokenStore, Depends(get_tokens)]) -> TokenOut:
    token = tokens.get(token_id)
    if token is None or token.kind != "api":
        raise HTTPException(status_code=404, detail=f"no token with id {token_id!r}")
    revoked = tokens.revoke(token_id, by=principal.name)
    assert revoked is not None
    return TokenOut.model_validate(revoked.to_dict())
