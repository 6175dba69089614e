"""Bearer tokens: one shared token (the client names the author of its edits) or a users file that
binds each token to a person, whose name every edit made with it carries.

A users file holds one ``name: token`` per line; blank lines and lines starting with ``#`` are
skipped::

    anna: 3q2-bB9w0mX1c7VhZkq8RZr2Jm1sQx4T
    ben: Zt0rKx2mPq9LwEo5Uy7Ia3Sd6Fg8Hj1K
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from pathlib import Path

from quickstudy.errors import QuickstudyError

# The author of an edit made with a shared token when the client names nobody.
SHARED_AUTHOR = "web"
# A guessable token would open the store to anyone on the network; secrets.token_urlsafe() gives 43.
MIN_TOKEN_LENGTH = 16


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise QuickstudyError(
            f"{where}: a token needs at least {MIN_TOKEN_LENGTH} characters (got {len(token)}); "
            "leave --token out to get a random one"
        )
    if not token.isascii() or not token.isprintable() or " " in token:
        raise QuickstudyError(f"{where}: a token is printable ASCII without spaces")
    return token


def _check_name(name: str, where: str) -> str:
    if not name or any(unicodedata.category(c).startswith("C") for c in name):
        raise QuickstudyError(f"{where}: a user name is non-empty text without control characters")
    return name


def read_users(path: str | os.PathLike[str]) -> dict[str, str]:
    """Token -> user name, from a file of ``name: token`` lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise QuickstudyError(f"{path}: cannot read the users file ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise QuickstudyError(f"{path}: the users file is not UTF-8 text") from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, token = line.partition(":")
        if not colon:
            raise QuickstudyError(f"{where}: expected 'name: token'")
        name, token = _check_name(name.strip(), where), check_token(token.strip(), where)
        if name in users.values():
            raise QuickstudyError(f"{where}: user {name!r} is named twice")
        if token in users:
            raise QuickstudyError(f"{where}: {name!r} has the token of {users[token]!r}; give each their own")
        users[token] = name
    if not users:
        raise QuickstudyError(f"{path}: the users file names nobody (one 'name: token' per line)")
    return users
