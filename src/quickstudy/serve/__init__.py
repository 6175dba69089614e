"""The web service: a REST API over one label store and one model folder (``quickstudy serve``).

>>> app = create_app(ServeSettings(Path("labels.qs"), Path("runs/neu"), {new_token(): None}))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

Modules: ``app`` (the application), ``routers`` (one module per area: health, predict, images,
taxonomy, learn, models), ``dependencies`` (the token check and what routes share), ``auth``
(tokens and users files), ``uploads`` (checking and keeping uploaded images), ``jobs`` (background
jobs), ``predictors`` (the current model version), ``schemas`` (the JSON), ``settings``.
"""

from quickstudy.serve.app import create_app
from quickstudy.serve.auth import new_token, read_users
from quickstudy.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "new_token", "read_users"]
