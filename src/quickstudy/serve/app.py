"""The FastAPI application: the API under ``/api`` (every route behind the token check), the
OpenAPI description at ``/openapi.json`` and Swagger UI at ``/docs`` from assets shipped in the
package (no CDN: a line PC reaches none), and the page at ``/`` that uses nothing but the API.
``/``, ``/docs``, ``/openapi.json`` and ``/static`` hold no data and need no token: the page asks the
person for the token and sends it with each API call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from quickstudy import __version__
from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import InvalidBox, NotInStore, StaleEdit
from quickstudy.serve.cache import CacheFiller, PredictionCache
from quickstudy.serve.dependencies import authenticated
from quickstudy.serve.jobs import BackgroundJobs
from quickstudy.serve.predictors import open_model
from quickstudy.serve.routers import boxes, health, images, learn, models, predict, taxonomy, unknowns
from quickstudy.serve.settings import ServeSettings
from quickstudy.serve.uploads import FORM_OVERHEAD, UploadRefused

STATIC = Path(__file__).parent / "static"


def create_app(settings: ServeSettings) -> FastAPI:
    model = open_model(settings.model, settings.device)
    filler = CacheFiller(PredictionCache(settings.store), model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the prediction cache fills while the server runs, for whichever version is current
        if settings.fill_cache:
            filler.start()
        yield
        filler.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="quickstudy",
        version=__version__,
        summary="Label, review and teach a few-shot defect detector: the store, the taxonomy and the model.",
        description="Every `/api/` route needs `Authorization: Bearer TOKEN` (the token "
        "`quickstudy serve` printed). Writes go through the label store's transactions, so the "
        "command line can work on the same store at the same time.",
        docs_url=None,
        redoc_url=None,
        max_body_size=settings.max_upload_bytes + FORM_OVERHEAD,
    )
    app.state.settings = settings
    app.state.model = model
    app.state.jobs = BackgroundJobs()
    app.state.filler = filler

    api = APIRouter(prefix="/api", dependencies=[Depends(authenticated)])
    for area in (health, predict, images, boxes, taxonomy, learn, models, unknowns):
        api.include_router(area.router)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "page" / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title="quickstudy API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    @app.exception_handler(UploadRefused)
    def refused_upload(request: Request, error: UploadRefused) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(StaleEdit)
    def stale_edit(request: Request, error: StaleEdit) -> JSONResponse:
        # the image as it is now, so that the client redraws it rather than asking again
        with settings.open_store() as store:
            image = images.image_detail(store.image(error.image_id))
        return JSONResponse({"detail": str(error), "image": image}, status_code=status.HTTP_409_CONFLICT)

    @app.exception_handler(NotInStore)
    def not_in_store(request: Request, error: NotInStore) -> JSONResponse:
        detail = f"no {error.kind} {error.record_id} in the store"
        return JSONResponse({"detail": detail}, status_code=status.HTTP_404_NOT_FOUND)

    @app.exception_handler(InvalidBox)
    def invalid_box(request: Request, error: InvalidBox) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(QuickstudyError)
    def refused_by_store_or_model(request: Request, error: QuickstudyError) -> JSONResponse:
        # the store or the model refused a well-formed request in its present state, and says why
        return JSONResponse({"detail": str(error)}, status_code=status.HTTP_409_CONFLICT)

    return app
