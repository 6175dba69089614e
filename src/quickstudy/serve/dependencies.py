"""The dependencies the routes share: the caller's token (on every ``/api/`` route), the author of
an edit, the server's settings, its current model and its background jobs and the filler of its prediction cache."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, File, Header, HTTPException, Request, UploadFile, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quickstudy.serve.auth import SHARED_AUTHOR
from quickstudy.serve.cache import CacheFiller
from quickstudy.serve.jobs import BackgroundJobs
from quickstudy.serve.predictors import CurrentModel
from quickstudy.serve.settings import ServeSettings
from quickstudy.serve.uploads import CheckedImage, check_image, read_upload

_bearer = HTTPBearer(auto_error=False, description="the token `quickstudy serve` printed on start")


def server_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str | None:
    """The user a valid token belongs to (``None`` for the shared token); 401 for any other request."""
    given = (credentials.credentials if credentials else "").encode()
    valid, user = False, None
    for token, name in request.app.state.settings.tokens.items():
        # every token is compared, so the time taken does not tell which one came close
        if secrets.compare_digest(given, token.encode()):
            valid, user = True, name
    if not valid:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unauthorized", headers={"WWW-Authenticate": "Bearer"}
        )
    return user


def author(
    user: Annotated[str | None, Depends(authenticated)],
    x_quickstudy_author: Annotated[
        str | None,
        Header(
            max_length=100,
            description="who makes the edit, with a shared token (default: web); "
            "with a users file the token's user is the author and this is ignored",
        ),
    ] = None,
) -> str:
    if user is not None:
        return user
    return (x_quickstudy_author or "").strip() or SHARED_AUTHOR


def current_model(request: Request) -> CurrentModel:
    return request.app.state.model


def background_jobs(request: Request) -> BackgroundJobs:
    return request.app.state.jobs


def cache_filler(request: Request) -> CacheFiller:
    return request.app.state.filler


def uploaded_image(
    file: Annotated[UploadFile, File(description="an image: PNG, JPEG, BMP, TIFF or WebP")],
    settings: Annotated[ServeSettings, Depends(server_settings)],
) -> CheckedImage:
    """The multipart field ``file``, checked in full (see :func:`check_image`)."""
    data = read_upload(file.file, file.filename, settings.max_upload_bytes)
    return check_image(data, file.filename, settings.max_pixels)


Settings = Annotated[ServeSettings, Depends(server_settings)]
Upload = Annotated[CheckedImage, Depends(uploaded_image)]
Author = Annotated[str, Depends(author)]
Model = Annotated[CurrentModel, Depends(current_model)]
Jobs = Annotated[BackgroundJobs, Depends(background_jobs)]
Filler = Annotated[CacheFiller, Depends(cache_filler)]
