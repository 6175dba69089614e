"""Walk issue 22's list on a real store and model in Debian's Chromium, as a person would: every
bullet of "The page", "Taxonomy", "Teach a new type", "Unknowns", predict, upload by drop and
"checked, no defect". Not a test (pytest does not collect it): a record for
``benchmarks/results/serve.md``. It works on copies of the store and the model, serves them with
``python -m quickstudy serve`` on a free loopback port, and writes ``walkthrough.json`` (each step:
what the page showed, whether it was what the issue asks, seconds) and a screenshot per step.

    .venv/bin/python tests/browser/walkthrough.py --store /tmp/sdemo/labels.qs --model /tmp/sdemo/model \\
        --out /tmp/walk
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from playwright.sync_api import sync_playwright

TOKEN = "walkthrough-token-0123456789"
CHROMIUM = os.environ.get("QUICKSTUDY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def drop_file(page: Any, zone: str, name: str, data: bytes) -> None:
    """Drop a file on ``zone`` as a person dragging it from their desktop does (tests/browser/test_page.py
    drops the same way)."""
    page.evaluate(
        """([zone, name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            const target = document.querySelector(zone);
            target.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            target.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [zone, name, base64.b64encode(data).decode()],
    )


class Walk:
    def __init__(self, page: Any, api: httpx.Client, out: Path) -> None:
        self.page, self.api, self.out = page, api, out
        self.steps: list[dict[str, Any]] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def step(self, bullet: str, action: Callable[[], str]) -> None:
        """Run one step; its return is what the page showed. An exception is a step that failed."""
        started = time.perf_counter()
        try:
            shown, ok = action(), True
        except Exception as failure:  # a record of what did not work, not a crash
            shown, ok = f"FAILED: {type(failure).__name__}: {str(failure).splitlines()[0][:300]}", False
        seconds = round(time.perf_counter() - started, 2)
        name = f"{len(self.steps) + 1:02d}"
        self.page.screenshot(path=self.out / f"{name}.png", full_page=True)
        self.steps.append({"step": name, "bullet": bullet, "ok": ok, "shown": shown, "seconds": seconds})
        print(f"{name} {'ok  ' if ok else 'FAIL'} {seconds:6.2f}s {bullet}: {shown}", flush=True)

    def tab(self, name: str) -> None:
        self.page.click(f'.tab[data-tab="{name}"]')

    def text(self, selector: str) -> str:
        return " ".join(self.page.locator(selector).inner_text().split())

    def open_image(self, image_id: int) -> None:
        self.tab("images")
        self.page.evaluate(f"openImage({image_id})")
        self.page.wait_for_selector(f'#image-title:has-text("Image {image_id}:")')
        self.page.wait_for_selector("#image-holder .a9s-annotationlayer")

    def to_screen(self, image: dict[str, Any], x: float, y: float) -> tuple[float, float]:
        frame = self.page.locator("#image-view").bounding_box()
        scale = frame["width"] / image["width"]
        return frame["x"] + x * scale, frame["y"] + y * scale

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
        self.page.mouse.move(*end, steps=5)
        self.page.wait_for_timeout(350)
        self.page.mouse.up()

    def drop(self, zone: str, name: str, data: bytes) -> None:
        drop_file(self.page, zone, name, data)

    def preview(self, op: str, fill: dict[str, str], choose: dict[str, str] | None = None) -> str:
        self.tab("taxonomy")
        form = f'.taxonomy-op[data-op="{op}"]'
        for field, value in (choose or {}).items():
            self.page.select_option(f"{form} [name={field}]", value)
        for field, value in fill.items():
            self.page.fill(f"{form} [name={field}]", value)
        self.page.click(f"{form} button")
        self.page.wait_for_selector("#taxonomy-preview:not([hidden])")
        return self.text("#taxonomy-preview")

    def confirm(self) -> str:
        self.page.evaluate("document.querySelector('#notice').hidden = true")  # an earlier step's notice
        self.page.click("#taxonomy-confirm")
        self.page.wait_for_selector("#notice:not([hidden])")
        return self.text("#notice")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walk(w: Walk, store_classes: list[str]) -> None:
    page = w.page

    def gallery() -> str:
        page.wait_for_selector("#page-info")
        first = w.text("#page-info")
        page.click("#page-next")
        page.wait_for_function("!document.querySelector('#page-info').textContent.startsWith('1–')")
        return f"{first}; next page: {w.text('#page-info')}; {page.locator('.thumb').count()} thumbnails"

    w.step("gallery and paging", gallery)

    def filters() -> str:
        w.tab("images")
        seen = []
        for select, value in (("#filter-split", "test"), ("#filter-class", store_classes[0])):
            page.select_option(select, value)
            page.wait_for_timeout(600)
            seen.append(f"{select[8:]}={value}: {w.text('#page-info')}")
            page.select_option(select, "")
        return "; ".join(seen)

    w.step("filters: split, class", filters)

    def cache_filters() -> str:
        deadline = time.monotonic() + 600
        while w.call("GET", "/api/cache")["state"] != "ready":
            assert time.monotonic() < deadline, "the prediction cache did not fill in 10 minutes"
            time.sleep(2)
        seen = []
        for select, value in (
            ("#filter-model", "unknown"),
            ("#filter-model", "disagrees"),
            ("#filter-checked", "no_labels"),
        ):
            page.select_option(select, value)
            page.wait_for_timeout(800)
            seen.append(f"{value}: {w.text('#page-info')}")
            page.select_option(select, "")
        return "; ".join(seen) + f"; cache line: {w.text('#cache-line')}"

    w.step("filters from the prediction cache: unknown, disagrees, no labels yet", cache_filters)

    partial = next(
        (
            i["id"]
            for i in w.call("GET", "/api/images", params={"limit": 200})["images"]
            if any(isinstance(b["class"], list) for b in w.call("GET", f"/api/images/{i['id']}")["boxes"])
        ),
        None,
    )
    unclassed = next(
        i["id"]
        for i in w.call("GET", "/api/images", params={"limit": 200})["images"]
        if any(b["class"] is None for b in w.call("GET", f"/api/images/{i['id']}")["boxes"])
    )

    def image_view() -> str:
        w.open_image(partial or unclassed)
        boxes = w.text("#box-list")
        w.open_image(unclassed)
        return f"image {partial}: {boxes[:160]} | image {unclassed}: {w.text('#box-list')[:160]}"

    w.step("image view: class, no class, partial set", image_view)

    # an image the current model finds something on (from the prediction cache), else the unclassed one
    found = w.call("GET", "/api/images", params={"unknown": "true", "limit": 1})["images"]
    detected = found[0]["id"] if found else unclassed

    def detections() -> str:
        w.open_image(detected)
        page.check("#show-detections")
        page.wait_for_selector("#detections-panel:not([hidden])")
        page.wait_for_timeout(1500)
        n = page.locator("#image-holder .overlay rect[stroke-dasharray]").count()
        return f"{w.text('#detections-panel')[:200]}; dashed rects drawn: {n}"

    w.step("detections as a toggled overlay", detections)

    def accept() -> str:
        before = len(w.call("GET", f"/api/images/{detected}")["boxes"])
        buttons = page.locator("#detection-list button")
        if buttons.count() == 0:
            return "no detection on this image to accept (model found none)"
        buttons.first.click()
        page.wait_for_selector('#notice:has-text("added as")')
        after = len(w.call("GET", f"/api/images/{detected}")["boxes"])
        return f"{w.text('#notice')}; boxes {before} -> {after}"

    w.step("accept a detection as a label in one click", accept)

    train = w.call("GET", "/api/images", params={"split": "train", "limit": 5})["images"]
    target = w.call("GET", f"/api/images/{train[0]['id']}")

    def draw() -> str:
        w.open_image(target["id"])
        page.uncheck("#show-detections")
        width, height = target["width"], target["height"]
        w.drag(
            w.to_screen(target, width * 0.05, height * 0.05), w.to_screen(target, width * 0.3, height * 0.3)
        )
        page.wait_for_selector("#box-panel:not([hidden])")
        page.select_option("#box-class", store_classes[0])
        page.wait_for_selector(f'#box-list li:has-text("{store_classes[0]}")')
        page.mouse.click(*w.to_screen(target, width * 0.95, height * 0.95))
        now = w.call("GET", f"/api/images/{target['id']}")
        new = max(now["boxes"], key=lambda b: b["id"])
        return (
            f"drew a box, gave it {store_classes[0]}: stored {new['box']} {new['class']} by {new['author']}"
        )

    w.step("draw a box and give it a class", draw)

    def move_resize_unclass_delete() -> str:
        image = w.call("GET", f"/api/images/{target['id']}")
        box = max(image["boxes"], key=lambda b: b["id"])
        x1, y1, x2, y2 = box["box"]
        centre = w.to_screen(image, (x1 + x2) / 2, (y1 + y2) / 2)
        page.mouse.click(*centre)
        page.wait_for_selector("#box-panel:not([hidden])")
        w.drag(centre, (centre[0] + 30, centre[1] + 20))
        page.mouse.click(*w.to_screen(image, image["width"] * 0.95, image["height"] * 0.95))
        page.wait_for_timeout(1000)
        moved = next(b for b in w.call("GET", f"/api/images/{target['id']}")["boxes"] if b["id"] == box["id"])
        mx1, my1, mx2, my2 = moved["box"]
        page.mouse.click(*w.to_screen(image, (mx1 + mx2) / 2, (my1 + my2) / 2))
        page.wait_for_selector("#box-panel:not([hidden])")
        corner = w.to_screen(image, mx2, my2)
        w.drag(corner, (corner[0] + 25, corner[1] + 25))
        page.wait_for_timeout(300)
        page.select_option("#box-class", "")
        page.wait_for_timeout(1000)
        resized = next(
            b for b in w.call("GET", f"/api/images/{target['id']}")["boxes"] if b["id"] == box["id"]
        )
        page.mouse.click(
            *w.to_screen(
                image,
                (resized["box"][0] + resized["box"][2]) / 2,
                (resized["box"][1] + resized["box"][3]) / 2,
            )
        )
        page.wait_for_selector("#box-panel:not([hidden])")
        page.click("#box-delete")
        page.wait_for_timeout(1000)
        gone = all(b["id"] != box["id"] for b in w.call("GET", f"/api/images/{target['id']}")["boxes"])
        return (
            f"moved {box['box']} -> {moved['box']}; resized -> {resized['box']} class {resized['class']}; "
            f"deleted: {gone}"
        )

    w.step("move, resize, leave without class, delete", move_resize_unclass_delete)

    pixels = w.api.get(f"/api/images/{train[1]['id']}/file").content
    upload = io.BytesIO()
    Image.open(io.BytesIO(pixels)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(upload, format="PNG")
    upload_bytes = upload.getvalue()

    def upload_by_drop() -> str:
        w.tab("images")
        w.drop("#upload-zone", "my photo of the part.png", upload_bytes)
        page.wait_for_selector('#upload-log:has-text("added as image")')
        log = w.text("#upload-log")
        image_id = int(log.split("added as image")[1].split()[0].strip(".,;:"))
        image = w.call("GET", f"/api/images/{image_id}")
        digest = hashlib.sha256(upload_bytes).hexdigest()
        return (
            f"{log[:120]}; stored as {image['name']} "
            f"(sha256 {digest[:12]}…), checked={image['checked']}, split={image.get('split')}"
        )

    w.step("upload by drag and drop, named by content hash, unlabelled", upload_by_drop)

    def mark_checked() -> str:
        uploaded = w.call("GET", "/api/images", params={"checked": "false"})["images"]
        image_id = uploaded[-1]["id"]
        w.open_image(image_id)
        before = w.text("#image-meta")
        page.click("#mark-checked")
        page.wait_for_selector('#image-meta:has-text("checked, no defect")')
        return f"image {image_id}: '{before[-40:]}' -> '{w.text('#image-meta')[-40:]}'"

    w.step("mark an image checked, no defect", mark_checked)

    # -- taxonomy ---------------------------------------------------------------------------------
    w.step(
        "taxonomy add (preview, confirm)", lambda: w.preview("add", {"name": "blob"}) + " | " + w.confirm()
    )
    w.step(
        "taxonomy rename",
        lambda: w.preview("rename", {"new": "blobs"}, {"old": "blob"}) + " | " + w.confirm(),
    )
    merge_a, merge_b = store_classes[1], store_classes[2]
    w.step(
        "taxonomy merge (then undone)",
        lambda: (
            w.preview("merge", {"sources": f"{merge_a}, {merge_b}", "target": "spots"}) + " | " + w.confirm()
        ),
    )

    def undo_latest() -> str:
        w.tab("taxonomy")
        page.click("#undo-preview")
        page.wait_for_selector("#taxonomy-preview:not([hidden])")
        shown = w.text("#taxonomy-preview")
        return shown + " | " + w.confirm()

    w.step("undo names the edit (whose, what) and undoes it", undo_latest)
    w.step(
        "taxonomy split: preview says what boxes will mean",
        lambda: (
            w.preview("split", {"targets": f"{merge_a}_a, {merge_a}_b"}, {"source": merge_a})
            + " | "
            + w.confirm()
        ),
    )

    def partial_after_split() -> str:
        listing = w.call("GET", "/api/images", params={"class": f"{merge_a}_a", "limit": 1})["images"]
        w.open_image(listing[0]["id"])
        page.wait_for_selector(f'#box-list li:has-text("{merge_a}_a | {merge_a}_b")')
        return w.text("#box-list")[:200]

    w.step("a split box shows as a partial set", partial_after_split)
    w.step("undo the split", undo_latest)

    def retire_both() -> str:
        form = '.taxonomy-op[data-op="retire"]'
        w.tab("taxonomy")
        default = page.is_checked(f'{form} input[value="unnamed"]')
        unnamed = w.preview("retire", {}, {"name": "blobs"})
        page.click("#taxonomy-cancel")
        shown = []
        for meaning in ("unnamed", "other-types"):
            page.check(f'{form} input[value="{meaning}"]')
            shown.append(w.preview("retire", {}, {"name": merge_b}))
            page.click("#taxonomy-cancel")
        page.check(f'{form} input[value="unnamed"]')
        return f"default unnamed: {default}; blobs: {unnamed} | {merge_b}: " + " || ".join(shown)

    w.step("retire: the two meanings previewed", retire_both)
    w.step("retire blobs (unnamed)", lambda: w.preview("retire", {}, {"name": "blobs"}) + " | " + w.confirm())

    def history() -> str:
        w.tab("taxonomy")
        page.wait_for_selector("#history tbody tr")
        rows = page.locator("#history tbody tr").all()[:6]
        return " || ".join(" ".join(r.inner_text().split()) for r in rows)

    w.step("history: who, when, what (retire's meaning)", history)

    def undo_someone_elses_and_refuse_stale() -> str:
        w.call("POST", "/api/taxonomy/add", json={"name": "from_ann"}, headers={"X-Quickstudy-Author": "ann"})
        w.tab("taxonomy")
        page.click("#undo-preview")
        page.wait_for_selector("#taxonomy-preview:not([hidden])")
        named = w.text("#taxonomy-preview-title")
        # meanwhile someone else edits: the undo previewed is no longer the latest
        w.call("POST", "/api/taxonomy/add", json={"name": "from_bo"}, headers={"X-Quickstudy-Author": "bo"})
        page.evaluate("document.querySelector('#notice').hidden = true")
        page.click("#taxonomy-confirm")
        page.wait_for_selector("#notice:not([hidden])")
        refused = w.text("#notice")
        classes = [c["name"] for c in w.call("GET", "/api/taxonomy")["classes"]]
        return f"preview: {named} | confirm after bo's edit: {refused} | from_ann still there: {'from_ann' in classes}"

    w.step("undo names whose edit; refused when a later edit came", undo_someone_elses_and_refuse_stale)

    def undo_refused_by_dependency() -> str:
        image = w.call("GET", f"/api/images/{target['id']}")
        w.call(
            "POST",
            f"/api/images/{target['id']}/boxes",
            json={"version": image["version"], "box": [1, 1, 9, 9], "class": "from_bo"},
            headers={"X-Quickstudy-Author": "bo"},
        )
        w.call(
            "POST",
            "/api/taxonomy/rename",
            json={"old": "from_bo", "new": "bo_type"},
            headers={"X-Quickstudy-Author": "bo"},
        )
        edits = w.call("GET", "/api/taxonomy/history")
        box_edit = next(e for e in reversed(edits) if e["kind"].startswith("box") or "box" in e["kind"])
        undone = w.api.post("/api/taxonomy/undo", json={"edit": box_edit["id"]})
        return f"undo of edit {box_edit['id']} ({box_edit['kind']}) while a rename came after: {undone.status_code} {undone.json()['detail'][:200]}"

    w.step("undo of an edit a later one came after is refused (API, by id)", undo_refused_by_dependency)

    # -- unknowns, teach, versions ----------------------------------------------------------------
    def unknowns() -> str:
        w.tab("unknowns")
        page.wait_for_selector("#unknowns-summary:not(:empty)", timeout=120_000)
        page.wait_for_timeout(1500)
        groups = page.locator(".group")
        shown = w.text("#unknowns-summary")
        if groups.count() == 0:
            return shown + " (no group to name)"
        first = groups.first
        header = " ".join(first.locator("h3").inner_text().split())
        first.locator("input").fill("blob")
        first.locator("button").click()
        page.wait_for_selector('#notice:has-text("marked blob")', timeout=60_000)
        return f"{shown}; first group: {header}; named: {w.text('#notice')}"

    w.step("unknowns grouped; name a whole group", unknowns)

    def teach() -> str:
        classes = [c["name"] for c in w.call("GET", "/api/taxonomy")["classes"]]
        name = "blob" if "blob" in classes else store_classes[-1]
        w.tab("teach")
        page.select_option("#learn-class", name)
        page.wait_for_selector(f'#learn-support:has-text("{name}")')
        support = w.text("#learn-support")
        page.check('input[name=learn-how][value="adapt-localizer"]')
        page.evaluate(
            """() => {
                window.seen = [];
                const state = document.querySelector('#learn-state');
                new MutationObserver(() => window.seen.push(state.textContent))
                    .observe(state, { childList: true, characterData: true, subtree: true });
            }"""
        )
        page.click("#learn-start")
        page.wait_for_selector('#learn-state:has-text("is current")', timeout=600_000)
        seen = list(dict.fromkeys(s.split("(")[0] for s in page.evaluate("window.seen")))
        page.wait_for_selector("#learn-outcome:not([hidden])")
        return (
            f"{support} | steps shown: {seen} | {w.text('#learn-state')} | "
            f"{w.text('#learn-outcome-note')} | {w.text('#learn-outcome-table')[:400]}"
        )

    w.step("teach: learn with progress, before/after, new version", teach)

    def versions() -> str:
        w.tab("teach")
        current = w.call("GET", "/api/models")["current"]
        page.wait_for_selector(f'#models tbody tr.current:has-text("v{current} (current)")')
        listed = w.text("#models tbody")[:300]
        page.click("#models-undo")
        page.wait_for_timeout(1500)
        after_undo = w.text("#models tbody tr.current")[:60]
        last = page.locator("#models tbody tr").last
        last.locator("button").click()
        page.wait_for_timeout(1500)
        return f"{listed} | after undo: {after_undo} | after use: {w.text('#models tbody tr.current')[:60]}"

    w.step("model versions listed, undone, switched", versions)

    def predict() -> str:
        w.tab("predict")
        w.drop("#predict-zone", "part.png", pixels)
        page.wait_for_selector('#predict-summary:has-text("by model v")')
        return f"{w.text('#predict-summary')}; {w.text('#predict-list')[:200]}"

    w.step("predict page: drop an image, see detections", predict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "work").mkdir(parents=True)
    store = args.out / "work" / "labels.qs"
    shutil.copy(args.store, store)
    shutil.copytree(args.model, args.out / "work" / "model")
    port = free_port()
    log = (args.out / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quickstudy",
            "serve",
            "--store",
            str(store),
            "--model",
            str(args.out / "work" / "model"),
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as api:
            deadline = time.monotonic() + 120
            while True:
                try:
                    api.get("/api/health").raise_for_status()
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                    time.sleep(0.5)
            classes = [c["name"] for c in api.get("/api/taxonomy").json()["classes"]]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
                )
                page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url + "/")
                page.fill("#token", TOKEN)
                page.fill("#author", "walker")
                page.click("#sign-in button[type=submit]")
                page.wait_for_selector(".thumb")
                w = Walk(page, api, args.out)
                walk(w, classes)
                browser.close()
        record = {"url": url, "classes": classes, "page_errors": errors, "steps": w.steps}
        (args.out / "walkthrough.json").write_text(json.dumps(record, indent=1))
        failed = [s["step"] for s in w.steps if not s["ok"]]
        print(f"{len(w.steps) - len(failed)} of {len(w.steps)} steps ok; page errors: {errors}")
        return 1 if failed or errors else 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
