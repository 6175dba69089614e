"""``quickstudy serve``: the REST API over a label store and a model folder, on uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

from quickstudy.cli._common import add_device
from quickstudy.errors import QuickstudyError


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def _megabytes(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="the REST API over a label store and a model (docs at /docs)",
        description="Serve a REST API over a label store and a model folder: images, uploads, taxonomy "
        "changes, predict, learn as a background job, model versions. Every /api/ request needs "
        "'Authorization: Bearer TOKEN'; the token is printed on start (a random one unless --token or "
        "--users is given). Binds 127.0.0.1 unless --host says otherwise. The command line can work on "
        "the same store meanwhile.",
    )
    serve.add_argument("--store", required=True, help="label store file")
    serve.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="model folder (from `quickstudy train`), or an export folder (from `quickstudy export`: "
        "predicts without torch; learn and models use/undo are off)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="(default: 8000)")
    who = serve.add_mutually_exclusive_group()
    who.add_argument(
        "--token",
        help="the one token every client gives (at least 16 characters; default: a random one); the "
        "author of an edit is the name the client sends in X-Quickstudy-Author (default: web)",
    )
    who.add_argument(
        "--users",
        metavar="FILE",
        help="a file of 'name: token' lines, one per person; each edit's author is the name of its token",
    )
    serve.add_argument(
        "--max-upload-mb", type=_megabytes, default=20, help="largest image upload in MB (default: 20)"
    )
    add_device(serve)
    serve.set_defaults(func=cmd_serve)


def settings_from(args: argparse.Namespace) -> tuple[Any, str]:
    """The server's settings and what to print about its tokens; reads the users file, checks the
    store and the model folder."""
    from quickstudy.deploy.runtime import is_export
    from quickstudy.labels.store import Store
    from quickstudy.serve import ServeSettings, new_token, read_users
    from quickstudy.serve.auth import check_token
    from quickstudy.serve.settings import MEGABYTE

    store = Path(args.store).resolve()
    if not store.is_file():
        raise QuickstudyError(f"{args.store}: no such label store (create one with `quickstudy data import`)")
    Store.open(store, create=False).close()
    if not is_export(args.model):  # an export is checked in full when the app loads it
        from quickstudy.detect import ModelFolder

        ModelFolder(args.model).current()
    tokens: dict[str, str | None]
    if args.users:
        users = read_users(args.users)
        tokens = dict(users)
        told = f"users: {', '.join(users.values())} (each with their token from {args.users})"
    else:
        token = check_token(args.token, "--token") if args.token else new_token()
        tokens = {token: None}
        told = f"token: {token}"
    settings = ServeSettings(
        store=store,
        model=Path(args.model).resolve(),
        tokens=tokens,
        device=args.device,
        max_upload_bytes=int(args.max_upload_mb * MEGABYTE),
    )
    return settings, told


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:  # a host name
        return None


def _url(host: str, port: int) -> str:
    address = _address(host)
    return f"http://{f'[{host}]' if address is not None and address.version == 6 else host}:{port}"


def _loopback(host: str) -> bool:
    address = _address(host)
    return host == "localhost" or (address is not None and address.is_loopback)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from quickstudy.serve import create_app
    from quickstudy.serve.predictors import ExportModel

    settings, told = settings_from(args)
    app = create_app(settings)
    url = _url(args.host, args.port)
    print(f"quickstudy serve: {url}  (API docs: {url}/docs)")
    print(told)
    model = app.state.model
    if isinstance(model, ExportModel):
        print(
            f"model: {settings.model} is an {model.kind} (version {model.version()} of {model.source}); "
            f"off: {', '.join(model.disabled)} (they need the model folder)"
        )
    if not _loopback(args.host):
        print(
            f"note: listening on {args.host}, not only this machine: the token travels unencrypted "
            "over HTTP; put a TLS proxy in front on a shared network"
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
