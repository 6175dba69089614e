"""The page at ``/`` in a real Chromium (Debian's ``chromium``, driven by Playwright) against a real
``uvicorn`` serving a small synthetic store and a tiny trained detector: a person signs in, draws and
names a box, splits a class, teaches a new type, predicts on a dropped image. Each test leaves a
screenshot in ``tests/browser/screenshots/`` to look at."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from quickstudy.data.synthetic import SyntheticLine
from quickstudy.detect.model import TINY, DetectorConfig
from quickstudy.detect.training import train_detector
from quickstudy.labels.records import ImportedImage
from quickstudy.labels.store import Store
from quickstudy.serve import ServeSettings, create_app

from .walkthrough import drop_file

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
CHROMIUM = os.environ.get("QUICKSTUDY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow
TOKEN = "browser-test-token-0123456789"
SCREENSHOTS = Path(__file__).parent / "screenshots"
CLASSES = ("dent", "pit")
SIZE = 64
SCRATCH_IMAGE = 6  # a TRAIN image with a scratch on it and no labels yet
WAIT_MS = 20_000


def xyxy(box: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Template:
    folder: Path
    scratch: tuple[float, float, float, float]  # where the scratch on image 6 is, in its pixels


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """``labels.qs``: images 1-4 TRAIN with a dent or pit box, 5 TEST with a box without class, 6
    TRAIN with a scratch and no labels yet (``scratch`` is a class); ``model/``: a tiny detector of
    dent and pit trained on 1-4."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("page")
    line = SyntheticLine(seed=0, size=SIZE, defect_types=CLASSES, max_per_image=1, p_second_type=0)
    images = line.imported_images(folder, range(4)) + line.imported_images(
        folder, [4], split="test", labelled=False
    )
    scratches = SyntheticLine(seed=0, size=SIZE, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    pixels, boxes, _ = scratches.sample(10)
    Image.fromarray(pixels).save(folder / "scratch.png")
    images.append(ImportedImage(folder / "scratch.png", SIZE, SIZE, [], split="train", checked=False))
    with Store.open(folder / "labels.qs") as store:
        store.import_images(images, source="fixture", author="fixture")
        train_detector(
            store,
            folder / "model",
            epochs=100,
            batch_size=4,
            lr=5e-3,
            config=DetectorConfig(**TINY, image_size=SIZE),
            weighting="equal",
        )
        store.taxonomy.add("scratch", author="fixture")
        assert store.images()[-1].image_id == SCRATCH_IMAGE and not store.images()[-1].checked
    torch.set_num_threads(threads)
    return Template(folder, xyxy(boxes[0]))


@dataclass
class Served:
    url: str
    api: httpx.Client
    settings: ServeSettings
    template: Template

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()


@pytest.fixture
def served(template: Template, tmp_path: Path, one_torch_thread: None) -> Iterator[Served]:
    """``uvicorn`` on a free loopback port, in a thread, over a copy of the template's store and model."""
    shutil.copy(template.folder / "labels.qs", tmp_path / "labels.qs")
    shutil.copytree(template.folder / "model", tmp_path / "model")
    settings = ServeSettings(tmp_path / "labels.qs", tmp_path / "model", {TOKEN: None})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
        yield Served(url, api, settings, template)
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    """A fresh tab on the page, signed in as ``tess`` with the shared token; errors in the page's
    script fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(served.url + "/")
    tab.fill("#token", TOKEN)
    tab.fill("#author", "tess")
    tab.click("#sign-in button[type=submit]")
    tab.wait_for_selector(".thumb")
    yield tab
    context.close()
    assert not errors, errors


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def open_image(page: Any, image_id: int) -> None:
    page.click(f'.thumb[data-image="{image_id}"]')
    page.wait_for_selector(f'#image-title:has-text("Image {image_id}:")')
    page.wait_for_selector("#image-holder .a9s-annotationlayer")


def to_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """Where the image pixel (x, y) of the image shown is on the screen."""
    frame = page.locator("#image-view").bounding_box()
    scale = frame["width"] / SIZE
    return frame["x"] + x * scale, frame["y"] + y * scale


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press, move and release as a person does: Annotorious takes a press of under 300 ms that draws
    fewer than 100 image pixels for a click."""
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(*end, steps=5)
    page.wait_for_timeout(350)
    page.mouse.up()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_page_asks_for_the_token_and_refuses_a_wrong_one(browser, served):
    assert httpx.get(served.url + "/").status_code == 200  # the page itself needs no token
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(served.url + "/")
    assert tab.locator("#sign-in").is_visible()
    tab.fill("#token", "not-the-token-000000")
    tab.click("#sign-in button[type=submit]")
    tab.wait_for_selector('#sign-in-error:has-text("not accepted")')
    tab.fill("#token", TOKEN)
    tab.click("#sign-in button[type=submit]")
    tab.wait_for_selector(".thumb")
    assert tab.locator("#page-info").inner_text() == "1–6 of 6"
    assert tab.evaluate("document.cookie") == ""
    context.close()


def test_draw_a_box_with_the_mouse_and_give_it_a_class(page, served):
    open_image(page, SCRATCH_IMAGE)
    x1, y1, x2, y2 = served.template.scratch
    drag(page, to_screen(page, x1, y1), to_screen(page, x2, y2))
    page.wait_for_selector("#box-panel:not([hidden])")
    page.select_option("#box-class", "scratch")
    page.wait_for_selector('#box-list li:has-text("scratch")')
    page.mouse.click(*to_screen(page, 2, 2))  # deselect: the label is drawn on the image again
    page.wait_for_selector('#image-holder .overlay text:has-text("scratch")')
    screenshot(page, "draw_a_box")

    image = served.call("GET", f"/api/images/{SCRATCH_IMAGE}")
    assert len(image["boxes"]) == 1 and image["version"] == 2  # created, then relabelled
    box = image["boxes"][0]
    assert box["class"] == "scratch" and box["author"] == "tess"
    one_screen_pixel = SIZE / page.locator("#image-view").bounding_box()["width"]
    assert np.allclose(box["box"], served.template.scratch, atol=2 * one_screen_pixel), box
    assert served.call("GET", "/api/taxonomy/history")[-1]["author"] == "tess"


def test_a_box_is_moved_deleted_and_the_image_marked_checked(page, served):
    open_image(page, 1)
    before = served.call("GET", "/api/images/1")["boxes"][0]
    x1, y1, x2, y2 = before["box"]
    centre = to_screen(page, (x1 + x2) / 2, (y1 + y2) / 2)
    page.mouse.click(*centre)
    page.wait_for_selector("#box-panel:not([hidden])")
    drag(page, centre, (centre[0] + 20, centre[1] + 10))
    page.mouse.click(*to_screen(page, 1, 63))  # deselect: Annotorious reports the move now
    page.wait_for_function("document.querySelector('#image-meta').textContent.includes('version 1')")
    moved = served.call("GET", "/api/images/1")["boxes"][0]
    dx = moved["box"][0] - x1
    assert 1 < dx < 4 and abs(moved["box"][2] - x2 - dx) < 0.2, (before, moved)  # 20 screen px right

    page.mouse.click(*centre)
    page.wait_for_selector("#box-panel:not([hidden])")
    page.click("#box-delete")
    page.wait_for_selector('#box-list li:has-text("no boxes")')
    page.wait_for_selector('#image-meta:has-text("checked, no defect")')  # it was checked: complete
    page.click("#mark-unlabelled")
    page.wait_for_selector('#image-meta:has-text("no labels yet")')
    assert not served.call("GET", "/api/images/1")["checked"]
    page.click("#mark-checked")
    page.wait_for_selector('#image-meta:has-text("checked, no defect")')
    image = served.call("GET", "/api/images/1")
    assert image["boxes"] == [] and image["checked"] and image["version"] == 4


def test_a_box_resized_by_its_corner_then_relabelled_keeps_both(page, served):
    open_image(page, 1)
    before = served.call("GET", "/api/images/1")["boxes"][0]
    x1, y1, x2, y2 = before["box"]
    page.mouse.click(*to_screen(page, (x1 + x2) / 2, (y1 + y2) / 2))
    page.wait_for_selector("#box-panel:not([hidden])")
    corner = to_screen(page, x2, y2)
    drag(page, corner, (corner[0] + 30, corner[1] + 20))
    other = next(c for c in CLASSES if c != before["class"])
    page.select_option("#box-class", other)  # still selected: the resize is not reported yet
    page.wait_for_selector(f'#box-list li:has-text("{other}")')
    after = served.call("GET", "/api/images/1")["boxes"][0]
    scale = SIZE / page.locator("#image-view").bounding_box()["width"]
    assert after["class"] == other
    assert abs(after["box"][2] - (x2 + 30 * scale)) < 1 and abs(after["box"][3] - (y2 + 20 * scale)) < 1, (
        after
    )
    assert after["box"][:2] == before["box"][:2]


def test_an_edit_on_a_stale_image_shows_the_current_one_and_says_so(page, served):
    open_image(page, 1)
    box = served.call("GET", "/api/images/1")["boxes"][0]
    served.call("POST", "/api/images/1/boxes", json={"version": 0, "box": [1, 1, 9, 9], "class": "pit"})
    x1, y1, x2, y2 = box["box"]
    page.mouse.click(*to_screen(page, (x1 + x2) / 2, (y1 + y2) / 2))
    page.wait_for_selector("#box-panel:not([hidden])")
    page.select_option("#box-class", "")
    page.wait_for_selector('#notice:has-text("Someone changed this image meanwhile")')
    assert page.locator("#box-list li").count() == 2  # the other person's box is shown now
    screenshot(page, "stale_edit")
    assert served.call("GET", "/api/images/1")["boxes"][0]["class"] == box["class"]  # not overwritten


def test_split_a_class_and_see_the_partial_label(page, served):
    page.click('.tab[data-tab="taxonomy"]')
    page.wait_for_selector('#class-list li:has-text("dent")')
    page.select_option('.taxonomy-op[data-op="split"] select', "dent")
    page.fill('.taxonomy-op[data-op="split"] input', "dent_light, dent_deep")
    page.click('.taxonomy-op[data-op="split"] button')
    preview = page.wait_for_selector("#taxonomy-preview:not([hidden])")
    assert "will mean one of {dent_deep, dent_light}" in preview.inner_text()
    assert "dent_light" not in page.locator("#class-list").inner_text()  # a preview changes nothing
    screenshot(page, "taxonomy_preview")
    page.click("#taxonomy-confirm")
    page.wait_for_selector('#partial-list li:has-text("dent_deep | dent_light")')
    page.wait_for_selector('#history tbody tr:first-child:has-text("tess")')
    screenshot(page, "taxonomy_split")

    dented = served.call("GET", "/api/images", params={"class": "dent_deep"})["images"][0]["id"]
    page.click('.tab[data-tab="images"]')
    open_image(page, dented)
    page.wait_for_selector('#image-holder .overlay text:has-text("dent_deep | dent_light")')
    page.wait_for_selector('#box-list li:has-text("dent_deep | dent_light")')
    screenshot(page, "partial_label")

    page.click('.tab[data-tab="taxonomy"]')
    page.click("#undo-preview")
    title = page.wait_for_selector("#taxonomy-preview:not([hidden])").inner_text()
    assert "Undo edit" in title and "split" in title and "by tess" in title
    page.click("#taxonomy-confirm")
    page.wait_for_selector('#partial-list li:has-text("none")')


def test_retire_with_a_meaning_previews_it_and_the_history_shows_it(page, served):
    page.click('.tab[data-tab="taxonomy"]')
    page.wait_for_selector('#class-list li:has-text("pit")')
    form = '.taxonomy-op[data-op="retire"]'
    assert page.is_checked(f'{form} input[value="unnamed"]')  # the default
    page.select_option(f"{form} select", "dent")
    page.click(f"{form} button")
    preview = page.wait_for_selector("#taxonomy-preview:not([hidden])").inner_text()
    assert "labelled dent will have no class: a type no class names" in preview, preview
    page.click("#taxonomy-cancel")

    page.select_option(f"{form} select", "pit")
    page.check(f'{form} input[value="other-types"]')
    page.click(f"{form} button")
    preview = page.wait_for_selector("#taxonomy-preview:not([hidden])").inner_text()
    assert "labelled pit will have no class: of the other current classes" in preview, preview
    screenshot(page, "retire_preview")
    page.click("#taxonomy-confirm")
    row = page.wait_for_selector('#history tbody tr:first-child:has-text("retire")').inner_text()
    assert "pit, its boxes other types: of the other current classes" in row and "tess" in row, row
    assert "pit" not in page.locator("#class-list").inner_text()
    screenshot(page, "retire_history")
    assert served.call("GET", "/api/taxonomy/history")[-1]["payload"]["meaning"] == "other-types"


def taxonomy_change(page: Any, op: str, fill: dict[str, str], choose: dict[str, str] | None = None) -> str:
    """Preview a change in the Taxonomy tab, confirm it; returns the preview's text."""
    form = f'.taxonomy-op[data-op="{op}"]'
    for field, value in (choose or {}).items():
        page.select_option(f"{form} [name={field}]", value)
    for field, value in fill.items():
        page.fill(f"{form} [name={field}]", value)
    page.click(f"{form} button")
    preview = page.wait_for_selector("#taxonomy-preview:not([hidden])").inner_text()
    page.click("#taxonomy-confirm")
    page.wait_for_selector(f'#notice:has-text("{op} done")')
    return preview


def test_add_rename_merge_and_an_undo_that_names_another_persons_edit_and_refuses_a_stale_one(page, served):
    page.click('.tab[data-tab="taxonomy"]')
    page.wait_for_selector('#class-list li:has-text("pit")')
    assert "no box changes meaning" in taxonomy_change(page, "add", {"name": "blob"})
    assert "no box changes meaning" in taxonomy_change(page, "rename", {"new": "blobs"}, {"old": "blob"})
    merged = taxonomy_change(page, "merge", {"sources": "dent, pit", "target": "round"})
    assert (
        "2 boxes labelled dent will mean round" in merged and "2 boxes labelled pit will mean round" in merged
    )
    page.wait_for_selector('#class-list li:has-text("round: 4 boxes")')

    served.call("POST", "/api/taxonomy/add", json={"name": "anns"}, headers={"X-Quickstudy-Author": "ann"})
    page.click("#undo-preview")
    title = page.wait_for_selector("#taxonomy-preview:not([hidden])").inner_text()
    assert 'add (name: "anns") by ann' in title, title
    served.call("POST", "/api/taxonomy/add", json={"name": "bos"}, headers={"X-Quickstudy-Author": "bo"})
    page.click("#taxonomy-confirm")  # bo's edit came after ann's: the undo previewed is refused
    notice = page.wait_for_selector('#notice:has-text("is no longer the latest")').inner_text()
    assert "(add by bo at" in notice and "nothing was undone" in notice
    screenshot(page, "undo_refused")
    assert {"anns", "bos"} <= {c["name"] for c in served.call("GET", "/api/taxonomy")["classes"]}


def test_learn_a_new_type_and_see_the_new_version(page, served):
    x1, y1, x2, y2 = served.template.scratch
    served.call(
        "POST",
        f"/api/images/{SCRATCH_IMAGE}/boxes",
        json={"version": 0, "box": [x1, y1, x2, y2], "class": "scratch"},
    )
    page.click('.tab[data-tab="teach"]')
    page.select_option("#learn-class", "scratch")
    page.wait_for_selector('#learn-support:has-text("1 TRAIN image")')
    page.check('input[name=learn-how][value="adapt-localizer"]')
    page.evaluate(  # every state line and progress value the page shows while the job runs
        """() => {
            window.seen = [];
            const state = document.querySelector('#learn-state');
            new MutationObserver(() => window.seen.push(
                [state.textContent, document.querySelector('#learn-progress').value]
            )).observe(state, { childList: true, characterData: true, subtree: true });
        }"""
    )
    page.click("#learn-start")
    page.wait_for_selector('#learn-state:has-text("model version 2 is current (was 1)")', timeout=90_000)
    seen = page.evaluate("window.seen")
    values = [value for _, value in seen]
    assert values == sorted(values) and values[-1] == 1, seen  # the bar only moves forward
    assert any("adapting the localizer" in text and 0 < value < 1 for text, value in seen), seen
    page.wait_for_selector('#models tbody tr.current:has-text("v2 (current)")')
    assert "dent, pit, scratch" in page.locator("#models tbody tr.current").inner_text()
    page.wait_for_selector('#status-line:has-text("model v2")')
    screenshot(page, "learn")
    assert served.call("GET", "/api/models")["current"] == 2

    page.click("#models-undo")
    page.wait_for_selector('#models tbody tr.current:has-text("v1 (current)")')
    page.click('#models tbody tr:has-text("v2") button')
    page.wait_for_selector('#models tbody tr.current:has-text("v2 (current)")')


def test_predict_on_a_dropped_image_and_accept_a_detection(page, served):
    big = Image.open(served.template.folder / "line_0.png").resize((2 * SIZE, 2 * SIZE))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    page.click('.tab[data-tab="predict"]')
    drop_file(page, "#predict-zone", "part.png", buffer.getvalue())
    summary = page.wait_for_selector('#predict-summary:has-text("by model v1")').inner_text()
    found = len(page.locator("#predict-list li").all())
    assert found >= 1 and summary.startswith(f"part.png: {found} detection")
    assert page.locator("#predict-holder .overlay rect").count() == 2 * found  # outline + label tag
    screenshot(page, "predict")

    page.click('.tab[data-tab="images"]')
    open_image(page, 1)
    page.check("#show-detections")
    page.wait_for_selector("#detection-list button")
    page.wait_for_selector("#image-holder .overlay rect[stroke-dasharray]")
    screenshot(page, "detections")
    page.click("#detection-list button >> nth=0")
    page.wait_for_selector('#notice:has-text("added as")')
    assert len(served.call("GET", "/api/images/1")["boxes"]) == 2


def test_upload_by_drop_and_filter_the_gallery(page, served):
    drop_file(page, "#upload-zone", "new-part.png", png(np.full((48, 40), 128, dtype=np.uint8)))
    page.wait_for_selector('#upload-log:has-text("new-part.png: added as image 7")')
    stored = served.call("GET", "/api/images/7")
    data = png(np.full((48, 40), 128, dtype=np.uint8))
    assert stored["name"] == hashlib.sha256(data).hexdigest() + ".png" and not stored["checked"]
    drop_file(page, "#upload-zone", "not-an-image.png", b"hello")
    page.wait_for_selector('#upload-log .error:has-text("not an image")')
    page.wait_for_selector('#page-info:has-text("of 7")')
    page.select_option("#filter-checked", "false")
    page.wait_for_selector('#page-info:has-text("1–2 of 2")')  # the scratch image and the upload
    page.select_option("#filter-checked", "")
    page.select_option("#filter-split", "test")
    page.wait_for_selector('#page-info:has-text("1–1 of 1")')
    screenshot(page, "gallery")


def cache_unknowns(served: Served, members: dict[int, tuple[list[float], list[float]]]) -> None:
    """Write the current model's cached predictions as if it had called these boxes ``unknown``
    (image id -> (box, embedding)); every other image predicted with nothing."""
    from quickstudy.serve.cache import PredictionCache
    from quickstudy.serve.predictors import open_model

    key = open_model(served.settings.model, "cpu").identity()
    cache = PredictionCache(served.settings.store)
    for image_id in range(1, SCRATCH_IMAGE + 1):
        box, vector = members.get(image_id, (None, None))
        found = [{"box": box, "class": "unknown", "score": 0.8}] if box else []
        cache.put(key, image_id, found, {0: np.array(vector, dtype=np.float32)} if box else {})


def test_name_a_group_of_unknowns_and_filter_the_gallery_by_them(page, served):
    unclassed = served.call("GET", "/api/images/5")["boxes"][0]["box"]
    cache_unknowns(
        served, {SCRATCH_IMAGE: (list(served.template.scratch), [1, 0, 0]), 5: (unclassed, [0, 1, 0])}
    )
    page.select_option("#filter-model", "unknown")
    page.wait_for_selector('#page-info:has-text("1–2 of 2")')
    page.wait_for_selector('#cache-line:has-text("on all 6 images")')
    page.select_option("#filter-model", "")

    page.click('.tab[data-tab="unknowns"]')
    page.wait_for_selector('#unknowns-summary:has-text("2 unknown detections by model v1 in 2 groups")')
    page.wait_for_function("document.querySelectorAll('#unknown-groups canvas.crop').length === 2")
    scratch = next(
        g for g in served.call("GET", "/api/unknowns")["groups"] if g["members"][0]["image"] == SCRATCH_IMAGE
    )
    group = page.locator(f'.group[data-group="{scratch["key"]}"]')
    assert "1 box in 1 image" in group.inner_text()
    group.locator("input").fill("scratch")
    screenshot(page, "unknowns")
    group.locator("button").click()
    page.wait_for_selector('#notice:has-text("1 box marked scratch")')
    page.wait_for_selector('#unknowns-summary:has-text("1 unknown detection by model v1 in 1 group")')
    screenshot(page, "unknowns_named")
    boxes = served.call("GET", f"/api/images/{SCRATCH_IMAGE}")["boxes"]
    assert [(b["class"], b["author"]) for b in boxes] == [("scratch", "tess")]
    assert np.allclose(boxes[0]["box"], served.template.scratch)


def test_look_at_next_ranks_the_unlabelled_images_as_the_api_does_and_opens_one(page, served):
    grey = np.full((SIZE, SIZE), 128, np.uint8)
    blank = served.call("POST", "/api/images", files={"file": ("blank.png", png(grey))})
    page.click('.tab[data-tab="unknowns"]')
    assert page.locator("#suggest-class option").first.inner_text() == "a defect no known type explains"
    page.click("#suggest-start")
    page.wait_for_selector(
        '#suggest-state:has-text("the 2 of 2 unlabelled images model v1 finds most likely holding a defect '
        'no known type explains")'
    )
    items = page.locator("#suggestions li.suggestion").all()
    shown = [int(item.get_attribute("data-image")) for item in items]
    job = served.call("POST", "/api/suggest", json={})
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = served.call("GET", f"/api/jobs/{job['id']}")
    ranked = job["result"]["suggestions"]
    assert shown == [r["image"] for r in ranked] and sorted(shown) == sorted([SCRATCH_IMAGE, blank["id"]])
    for item, found in zip(items, ranked, strict=True):  # its name, score and why, as the API gives them
        assert item.inner_text().startswith(f"Image {found['image']} · {found['score']:.2f}")
        assert found["why"] in item.inner_text() and found["name"] in item.inner_text()
        name = item.locator("button.link")
        assert name.evaluate("b => getComputedStyle(b).color") == "rgb(58, 95, 205)"  # not white on white
        column = page.locator("#suggestions").bounding_box()
        for part in (name, item.locator(".file-name")):  # inside the column, however long the name
            box = part.bounding_box()
            assert column["x"] < box["x"] and box["x"] + box["width"] <= column["x"] + column["width"]
    screenshot(page, "look_at_next")
    items[0].locator("button.link").click()
    page.wait_for_selector(f'#image-title:has-text("Image {shown[0]}:")')
    assert page.locator("#images").is_visible() and not page.locator("#unknowns").is_visible()

    page.click('.tab[data-tab="unknowns"]')
    page.select_option("#suggest-class", "scratch")  # a class of the store the model has not learned
    page.click("#suggest-start")
    page.wait_for_selector("#suggest-state:has-text(\"class 'scratch' is not in the model (dent, pit)\")")
    assert page.locator("#suggestions li").count() == 0


def test_learn_shows_before_and_after_on_held_out_images(page, served):
    x1, y1, x2, y2 = served.template.scratch
    served.call(
        "POST",
        f"/api/images/{SCRATCH_IMAGE}/boxes",
        json={"version": 0, "box": [x1, y1, x2, y2], "class": "scratch"},
    )
    scratches = SyntheticLine(seed=0, size=SIZE, defect_types=("scratch",), max_per_image=1, p_second_type=0)
    pixels, boxes, _ = scratches.sample(11)
    held_out = served.call(
        "POST", "/api/images", files={"file": ("held-out.png", png(pixels))}, data={"split": "test"}
    )
    served.call(
        "POST",
        f"/api/images/{held_out['id']}/boxes",
        json={"version": 0, "box": list(xyxy(boxes[0])), "class": "scratch"},
    )
    page.click('.tab[data-tab="teach"]')
    page.select_option("#learn-class", "scratch")
    page.wait_for_selector('#learn-support:has-text("1 TRAIN image")')
    page.click("#learn-start")
    page.wait_for_selector("#learn-outcome:not([hidden])", timeout=90_000)
    note = page.locator("#learn-outcome-note").inner_text()
    assert note.startswith("1 of 1 held-out images holding 'scratch' boxes"), note
    header = page.locator("#learn-outcome-table thead").inner_text()
    assert "before (v1)" in header and "after (v2)" in header and "1 scratch box" in header
    rows = {
        row.get_attribute("data-row"): row.inner_text().split("\t")
        for row in page.locator("#learn-outcome-table tbody tr").all()
    }
    assert [r[0] for r in rows.values()] == [
        "named right",
        "reported unknown",
        "named as another type",
        "missed",
        "image precision",
        "image recall",
    ]
    assert (
        rows["named_right"][1].startswith("0 (0%)") and rows["image_recall"][1] == "0%"
    )  # v1 knew no scratch
    counts = [int(rows[k][2].split()[0]) for k in ("named_right", "unknown", "named_other", "missed")]
    assert sum(counts) == 1
    screenshot(page, "learn_outcome")
