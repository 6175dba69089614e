// The quickstudy page: everything it shows and changes goes through the REST API under /api, with
// the token the person gave once (kept in sessionStorage, sent as a Bearer header; no cookies).
"use strict";

const PAGE_SIZE = 24;
// the image view's size on screen: an image is scaled, up or down, to fit it
const DISPLAY_WIDTH = 560;
const DISPLAY_HEIGHT = 560;
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
const $ = (selector) => document.querySelector(selector);

// -- the API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  const result = { Authorization: `Bearer ${sessionStorage.getItem("qs.token") || ""}`, ...extra };
  const author = sessionStorage.getItem("qs.author");
  if (author) result["X-Quickstudy-Author"] = author;
  return result;
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(detail);
}

async function api(method, path, { json, form, blob } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(`/api${path}`, init);
  if (response.status === 401) {
    askForToken("The server refused the token; sign in again.");
    throw new ApiError(401, "unauthorized", null);
  }
  const body = blob && response.ok ? await response.blob() : await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body ? detailText(body.detail) : response.statusText, body);
  }
  return body;
}

function notify(text, kind = "info") {
  const box = $("#notice");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (box.hidden = true), kind === "error" ? 12000 : 5000);
}

function failed(error) {
  if (error instanceof ApiError && error.status === 401) return;
  notify(error.message || String(error), "error");
}

// -- signing in ------------------------------------------------------------------------------------

function askForToken(message = "") {
  $("#sign-in-error").textContent = message;
  $("#author").value = sessionStorage.getItem("qs.author") || "";
  if (!$("#sign-in").open) $("#sign-in").showModal();
}

$("#sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const author = $("#author").value.trim();
  if (!/^[\x20-\x7e\xa0-\xff]*$/.test(author)) {
    $("#sign-in-error").textContent = "The name must be in Latin-1 letters (it travels in an HTTP header).";
    return;
  }
  sessionStorage.setItem("qs.token", $("#token").value.trim());
  sessionStorage.setItem("qs.author", author);
  const response = await fetch("/api/health", { headers: headers() });
  if (!response.ok) {
    $("#sign-in-error").textContent = response.status === 401 ? "That token is not accepted." : response.statusText;
    return;
  }
  $("#sign-in").close();
  start();
});

$("#sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("qs.token");
  location.reload();
});

// -- labels and colours ----------------------------------------------------------------------------

function labelText(label) {
  if (label === null) return "no class";
  return Array.isArray(label) ? label.join(" | ") : label;
}

// A class's colour follows its place in the taxonomy, so the first eight classes never share one;
// a box without class or an unknown detection is yellow, a partial label (one of several) grey.
function colour(name) {
  if (name === null || name === "unknown") return "#ffd400";
  if (Array.isArray(name)) return "#b8bcc6";
  const place = state.classes.indexOf(name);
  return place < 0 ? "#b8bcc6" : PALETTE[place % PALETTE.length];
}

const svgNS = "http://www.w3.org/2000/svg";
function svg(tag, attributes, text) {
  const element = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
  if (text !== undefined) element.textContent = text;
  return element;
}

function element(tag, attributes = {}, ...children) {
  const made = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) {
    if (k.startsWith("on")) made.addEventListener(k.slice(2), v);
    else made.setAttribute(k, v);
  }
  made.append(...children);
  return made;
}

// Boxes drawn as read-only SVG over an image (labels of stored boxes, detections), in image pixels.
function drawOverlay(overlay, width, height, items) {
  overlay.replaceChildren();
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const unit = width / overlay.getBoundingClientRect().width || 1; // image pixels per screen pixel
  for (const item of items) {
    const [x1, y1, x2, y2] = item.box;
    if (item.outline) {
      overlay.append(svg("rect", {
        x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: item.colour,
        "stroke-width": 2 * unit, "stroke-dasharray": item.dashed ? `${4 * unit} ${3 * unit}` : "",
      }));
    }
    const size = 12 * unit;
    // stored boxes are named above, detections below, so that the two names of one defect both show
    const above = y1 - 3 * unit > size ? y1 - 3 * unit : y2 + size;
    const below = y2 + size + unit < height ? y2 + size : above;
    const y = item.below ? below : above;
    const text = svg("text", { x: x1, y, "font-size": size, fill: "#fff", class: "overlay-label" }, item.text);
    overlay.append(text);
    const bounds = text.getBBox();
    overlay.insertBefore(svg("rect", {
      x: bounds.x - unit, y: bounds.y, width: bounds.width + 2 * unit, height: bounds.height,
      fill: item.colour, opacity: 0.85,
    }), text);
  }
}

// -- state -----------------------------------------------------------------------------------------

const state = {
  classes: [],
  offset: 0,
  image: null, // the image shown, as the API gave it (with its version)
  blob: null, // its bytes
  annotator: null,
  detections: [],
  detectionVersion: null,
  selectedBox: null,
};

async function refreshHealth() {
  const health = await api("GET", "/health");
  const who = sessionStorage.getItem("qs.author");
  $("#status-line").textContent =
    `model v${health.model_version} · taxonomy v${health.taxonomy_version}` + (who ? ` · ${who}` : "");
}

async function refreshClasses() {
  const taxonomy = await api("GET", "/taxonomy");
  state.classes = taxonomy.classes.map((c) => c.name);
  fillSelect($("#filter-class"), [["", "any"], ...state.classes.map((n) => [n, n])]);
  fillSelect($("#new-box-class"), [["", "no class"], ...state.classes.map((n) => [n, n])]);
  fillSelect($("#learn-class"), state.classes.map((n) => [n, n]));
  fillSelect($("#suggest-class"), [["", "a defect no known type explains"], ...state.classes.map((n) => [n, n])]);
  $("#class-names").replaceChildren(...state.classes.map((n) => element("option", { value: n })));
  for (const select of document.querySelectorAll(".class-choice")) {
    fillSelect(select, state.classes.map((n) => [n, n]));
  }
  return taxonomy;
}

function fillSelect(select, options) {
  const kept = select.value;
  select.replaceChildren(...options.map(([value, text]) => element("option", { value }, text)));
  if (options.some(([value]) => value === kept)) select.value = kept;
}

// -- gallery ---------------------------------------------------------------------------------------

async function imageBlobUrl(imageId) {
  return URL.createObjectURL(await api("GET", `/images/${imageId}/file`, { blob: true }));
}

// Only the latest request draws the gallery: an older one (a filter changed meanwhile) is dropped.
let galleryRequest = 0;

async function refreshGallery() {
  const request = ++galleryRequest;
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
  for (const [key, id] of [["split", "#filter-split"], ["class", "#filter-class"]]) {
    if ($(id).value) params.set(key, $(id).value);
  }
  const status = $("#filter-checked").value;
  if (status === "no_labels") params.set("no_labels", "true");
  else if (status) params.set("checked", status);
  if ($("#filter-model").value) params.set($("#filter-model").value, "true");
  const listing = await api("GET", `/images?${params}`);
  if (request !== galleryRequest) return;
  const cache = listing.predictions;
  $("#cache-line").hidden = !cache;
  if (cache) {
    $("#cache-line").textContent = cache.done < cache.total
      ? `The model (v${cache.model_version}) has looked at ${cache.done} of ${cache.total} images so far; the others appear as it gets to them.`
      : `From model v${cache.model_version}'s predictions on all ${cache.total} images.`;
  }
  if (listing.total && state.offset >= listing.total) {
    state.offset = Math.max(0, Math.floor((listing.total - 1) / PAGE_SIZE) * PAGE_SIZE);
    return refreshGallery();
  }
  const last = Math.min(listing.total, state.offset + listing.images.length);
  $("#page-info").textContent = listing.total ? `${state.offset + 1}–${last} of ${listing.total}` : "no images";
  $("#page-prev").disabled = state.offset === 0;
  $("#page-next").disabled = last >= listing.total;
  const thumbs = $("#thumbs");
  thumbs.replaceChildren();
  for (const image of listing.images) {
    const picture = element("img", { alt: image.name });
    const status = image.checked ? (image.boxes ? "checked" : "no defect") : "no labels yet";
    const card = element(
      "button",
      { class: "thumb", "data-image": image.id, title: image.name, onclick: () => openImage(image.id) },
      picture,
      element("span", {}, `#${image.id} ${image.split || "untagged"}`),
      element("span", { class: image.checked ? "ok" : "todo" }, `${image.boxes} box${image.boxes === 1 ? "" : "es"} · ${status}`),
    );
    if (state.image && state.image.id === image.id) card.classList.add("current");
    thumbs.append(card);
    imageBlobUrl(image.id).then((url) => (picture.src = url), () => (picture.alt = "file missing"));
  }
}

for (const id of ["#filter-split", "#filter-class", "#filter-checked", "#filter-model"]) {
  $(id).addEventListener("change", () => {
    state.offset = 0;
    refreshGallery().catch(failed);
  });
}
$("#page-prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE_SIZE);
  refreshGallery().catch(failed);
});
$("#page-next").addEventListener("click", () => {
  state.offset += PAGE_SIZE;
  refreshGallery().catch(failed);
});

// -- drop zones ------------------------------------------------------------------------------------

function dropZone(zone, input, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    onFiles([...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => {
    onFiles([...input.files]);
    input.value = "";
  });
}

dropZone($("#upload-zone"), $("#upload-input"), async (files) => {
  const log = $("#upload-log");
  log.replaceChildren();
  const split = $("#filter-split").value;
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    if (["train", "val", "test"].includes(split)) form.append("split", split);
    try {
      const image = await api("POST", "/images", { form });
      log.append(element("div", { class: "ok" }, `${file.name}: added as image ${image.id}`));
    } catch (error) {
      log.append(element("div", { class: "error" }, `${file.name}: ${error.message}`));
    }
  }
  await refreshGallery().catch(failed);
});

// -- one image: boxes drawn and edited with Annotorious ---------------------------------------------

function displayWidth(width, height) {
  return Math.round(width * Math.min(DISPLAY_WIDTH / width, DISPLAY_HEIGHT / height));
}

const boxAnnotationId = (boxId) => `box-${boxId}`;
const boxIdOf = (annotation) => Number(annotation.id.replace(/^box-/, ""));

function rectangle(id, [x1, y1, x2, y2]) {
  return {
    id,
    bodies: [],
    target: {
      annotation: id,
      selector: {
        type: "RECTANGLE",
        geometry: { x: x1, y: y1, w: x2 - x1, h: y2 - y1, bounds: { minX: x1, minY: y1, maxX: x2, maxY: y2 } },
      },
    },
  };
}

function boundsOf(annotation) {
  const { minX, minY, maxX, maxY } = annotation.target.selector.geometry.bounds;
  const { width, height } = state.image;
  const clamp = (v, top) => Math.round(Math.min(Math.max(v, 0), top) * 10) / 10;
  return [clamp(minX, width), clamp(minY, height), clamp(maxX, width), clamp(maxY, height)];
}

async function openImage(imageId) {
  const image = await api("GET", `/images/${imageId}`);
  state.blob = await api("GET", `/images/${imageId}/file`, { blob: true });
  state.detections = [];
  state.detectionVersion = null;
  const holder = $("#image-holder");
  if (state.annotator) state.annotator.destroy();
  holder.replaceChildren();
  const picture = element("img", { id: "image-view", alt: image.name, src: URL.createObjectURL(state.blob) });
  picture.style.width = `${displayWidth(image.width, image.height)}px`;
  const frame = element("div", { class: "frame" }, picture);
  holder.append(frame);
  await picture.decode();
  const overlay = svg("svg", { class: "overlay", preserveAspectRatio: "none" });
  frame.append(overlay);
  state.annotator = Annotorious.createImageAnnotator(picture, {
    drawingEnabled: true,
    drawingMode: "drag",
    style: (annotation) => {
      const box = state.image && state.image.boxes.find((b) => boxAnnotationId(b.id) === annotation.id);
      const stroke = colour(box ? box.class : null);
      return { stroke, strokeWidth: 2, fill: stroke, fillOpacity: 0.08 };
    },
  });
  state.annotator.setDrawingTool("rectangle");
  state.annotator.on("createAnnotation", (annotation) => createBox(annotation).catch(failed));
  state.annotator.on("updateAnnotation", (annotation) => moveBox(annotation).catch(failed));
  state.annotator.on("deleteAnnotation", (annotation) => deleteBox(boxIdOf(annotation)).catch(failed));
  state.annotator.on("selectionChanged", (selected) => selectBox(selected.length ? boxIdOf(selected[0]) : null));
  $("#viewer-empty").hidden = true;
  $("#viewer-body").hidden = false;
  $("#show-detections").checked = false;
  showImage(image);
  for (const card of document.querySelectorAll(".thumb")) {
    card.classList.toggle("current", Number(card.dataset.image) === imageId);
  }
}

// Draw the image's state as the server gave it; every edit's answer comes back through here.
function showImage(image) {
  state.image = image;
  $("#image-title").textContent = `Image ${image.id}: ${image.name}`;
  const status = image.checked ? (image.boxes.length ? "checked, boxes complete" : "checked, no defect") : "no labels yet";
  $("#image-meta").textContent =
    `${image.width}×${image.height} px · ${image.split || "untagged"} · ${status} · version ${image.version}`;
  $("#mark-checked").textContent = image.boxes.length ? "Mark checked: boxes complete" : "Mark checked, no defect";
  $("#mark-checked").disabled = image.checked;
  $("#mark-unlabelled").disabled = !image.checked;
  state.annotator.setAnnotations(image.boxes.map((b) => rectangle(boxAnnotationId(b.id), b.box)), true);
  $("#box-list").replaceChildren(
    ...image.boxes.map((b) =>
      element("li", { "data-box": b.id }, element("span", { class: "swatch", style: `background:${colour(b.class)}` }),
        `#${b.id} ${labelText(b.class)} [${b.box.map((v) => Math.round(v)).join(", ")}] by ${b.author}`),
    ),
  );
  if (!image.boxes.length) $("#box-list").append(element("li", { class: "hint" }, "no boxes"));
  if (state.selectedBox !== null && !image.boxes.some((b) => b.id === state.selectedBox)) selectBox(null);
  else if (state.selectedBox !== null) selectBox(state.selectedBox);
  redrawOverlay();
}

function redrawOverlay() {
  const overlay = document.querySelector("#image-holder .overlay");
  if (!overlay) return;
  const image = state.image;
  const items = image.boxes
    .filter((b) => b.id !== state.selectedBox)
    .map((b) => ({ box: b.box, text: labelText(b.class), colour: colour(b.class), outline: false }));
  if ($("#show-detections").checked) {
    for (const d of state.detections) {
      items.push({
        box: d.box, text: `${d.class} ${d.score.toFixed(2)}`, colour: colour(d.class), outline: true, dashed: true, below: true,
      });
    }
  }
  drawOverlay(overlay, image.width, image.height, items);
}

function selectBox(boxId) {
  state.selectedBox = boxId;
  const box = boxId === null ? null : state.image.boxes.find((b) => b.id === boxId);
  $("#box-panel").hidden = !box;
  if (box) {
    $("#box-id").textContent = `#${box.id}`;
    const options = [["", "no class"], ...state.classes.map((n) => [n, n])];
    if (Array.isArray(box.class)) options.push([JSON.stringify(box.class), `${labelText(box.class)} (one of)`]);
    fillSelect($("#box-class"), options);
    $("#box-class").value = box.class === null ? "" : Array.isArray(box.class) ? JSON.stringify(box.class) : box.class;
    $("#box-meta").textContent = `drawn by ${box.author} at ${box.created}`;
  }
  redrawOverlay();
}

// An edit: send it with the image's version; on 409 show the image as it is now and say so.
async function edit(method, path, body) {
  try {
    const answer = await api(method, path, { json: { ...body, version: state.image.version } });
    showImage(answer.image);
    refreshGallery().catch(failed);
    return answer;
  } catch (error) {
    if (error instanceof ApiError && error.status === 409 && error.body && error.body.image) {
      showImage(error.body.image);
      const now = error.body.image.version;
      notify(`Someone changed this image meanwhile (it is at version ${now} now) and it shows their changes. Your edit was not saved: make it again if it is still needed.`, "error");
      return null;
    }
    if (error instanceof ApiError) showImage(state.image); // undo what the editor shows
    throw error;
  }
}

async function createBox(annotation) {
  const chosen = $("#new-box-class").value;
  const answer = await edit("POST", `/images/${state.image.id}/boxes`, {
    box: boundsOf(annotation),
    class: chosen || null,
  });
  if (answer) {
    state.annotator.setSelected(boxAnnotationId(answer.box.id));
    selectBox(answer.box.id);
  }
}

async function moveBox(annotation) {
  await edit("PATCH", `/boxes/${boxIdOf(annotation)}`, { box: boundsOf(annotation) });
}

async function deleteBox(boxId) {
  const answer = await edit("DELETE", `/boxes/${boxId}`, {});
  if (answer) notify(`Deleted box #${boxId} (undo in Taxonomy → undo).`);
}

$("#box-class").addEventListener("change", () => {
  const value = $("#box-class").value;
  const label = value === "" ? null : value.startsWith("[") ? JSON.parse(value) : value;
  // Annotorious reports a move or resize only when the box is deselected: send the box as the editor
  // shows it with the class, or redrawing the answer would drop it
  const shown = state.annotator.getAnnotationById(boxAnnotationId(state.selectedBox));
  const stored = state.image.boxes.find((b) => b.id === state.selectedBox);
  const box = shown ? boundsOf(shown) : null;
  const moved = box && stored && box.some((v, i) => Math.abs(v - stored.box[i]) > 0.05);
  edit("PATCH", `/boxes/${state.selectedBox}`, moved ? { class: label, box } : { class: label }).catch(failed);
});

$("#box-delete").addEventListener("click", () => {
  const boxId = state.selectedBox;
  state.annotator.cancelSelected();
  deleteBox(boxId).catch(failed);
});

$("#mark-checked").addEventListener("click", () => {
  edit("POST", `/images/${state.image.id}/checked`, { checked: true }).catch(failed);
});
$("#mark-unlabelled").addEventListener("click", () => {
  edit("POST", `/images/${state.image.id}/checked`, { checked: false }).catch(failed);
});

async function predictBlob(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  return api("POST", "/predict", { form });
}

$("#show-detections").addEventListener("change", async () => {
  const show = $("#show-detections").checked;
  $("#detections-panel").hidden = !show;
  if (show && state.detectionVersion === null) {
    try {
      const prediction = await predictBlob(state.blob, state.image.name);
      state.detections = prediction.detections;
      state.detectionVersion = prediction.model_version;
    } catch (error) {
      $("#show-detections").checked = false;
      $("#detections-panel").hidden = true;
      throw error;
    }
  }
  $("#detections-version").textContent = `model v${state.detectionVersion}`;
  $("#detection-list").replaceChildren(
    ...state.detections.map((d, i) =>
      element("li", {},
        element("span", { class: "swatch", style: `background:${colour(d.class)}` }),
        `${d.class} ${d.score.toFixed(2)} [${d.box.map((v) => Math.round(v)).join(", ")}] `,
        element("button", { "data-detection": i, onclick: () => acceptDetection(d).catch(failed) }, "Accept as label"),
      ),
    ),
  );
  if (!state.detections.length) $("#detection-list").append(element("li", { class: "hint" }, "nothing found"));
  redrawOverlay();
});

async function acceptDetection(detection) {
  const answer = await edit("POST", `/images/${state.image.id}/boxes`, {
    box: detection.box,
    class: detection.class === "unknown" || !state.classes.includes(detection.class) ? null : detection.class,
  });
  if (answer) notify(`Box #${answer.box.id} added as ${labelText(answer.box.class)}.`);
}

// -- taxonomy --------------------------------------------------------------------------------------

const names = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const TAXONOMY_BODIES = {
  add: (f) => ({ name: f.name.value.trim() }),
  rename: (f) => ({ old: f.old.value, new: f.new.value.trim() }),
  merge: (f) => ({ sources: names(f.sources.value), target: f.target.value.trim() }),
  split: (f) => ({ source: f.source.value, targets: names(f.targets.value) }),
  retire: (f) => ({ name: f.name.value, meaning: f.meaning.value }),
};
let pendingChange = null; // the change previewed, sent again without dry_run when confirmed

// An edit's payload in words a person reads: the store's internal ids left out.
function payloadText(payload) {
  return Object.entries(payload)
    .filter(([key]) => !/_ids?$/.test(key))
    .map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(", ") : JSON.stringify(value)}`)
    .join("; ")
    .slice(0, 160);
}

// What a retired class's boxes are, by the retire's meaning (the store's RETIRE_MEANINGS).
const RETIRE_MEANINGS = {
  unnamed: "unnamed: a type no class names",
  "other-types": "other types: of the other current classes",
};

// An edit in words: a retire says what it made its class's boxes (and what they were before).
function editText(e) {
  if (e.kind !== "retire" || !e.payload.meaning) return payloadText(e.payload);
  const was = e.payload.previous ? ` (was ${RETIRE_MEANINGS[e.payload.previous] || e.payload.previous})` : "";
  return `${e.payload.name}, its boxes ${RETIRE_MEANINGS[e.payload.meaning] || e.payload.meaning}${was}`;
}

function describeEdit(e) {
  return `${e.kind} (${editText(e)}) by ${e.author} at ${e.time}`;
}

function showPreview(title, summary, change) {
  pendingChange = change;
  $("#taxonomy-preview-title").textContent = title;
  $("#taxonomy-preview-lines").replaceChildren(...summary.map((line) => element("li", {}, line)));
  $("#taxonomy-preview").hidden = false;
}

for (const form of document.querySelectorAll(".taxonomy-op")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const op = form.dataset.op;
    const body = TAXONOMY_BODIES[op](form);
    try {
      const dry = await api("POST", `/taxonomy/${op}`, { json: { ...body, dry_run: true } });
      showPreview(`${op}: what it does to boxes`, dry.summary, { op, body, form });
    } catch (error) {
      failed(error);
    }
  });
}

$("#undo-preview").addEventListener("click", async () => {
  try {
    const dry = await api("POST", "/taxonomy/undo", { json: { dry_run: true } });
    showPreview(`Undo edit ${dry.edit.id}: ${describeEdit(dry.edit)}`, dry.summary, {
      op: "undo",
      body: { edit: dry.edit.id },
    });
  } catch (error) {
    failed(error);
  }
});

$("#taxonomy-cancel").addEventListener("click", () => {
  $("#taxonomy-preview").hidden = true;
  pendingChange = null;
});

$("#taxonomy-confirm").addEventListener("click", async () => {
  const change = pendingChange;
  $("#taxonomy-preview").hidden = true;
  pendingChange = null;
  try {
    const done = await api("POST", `/taxonomy/${change.op}`, { json: change.body });
    $("#taxonomy-done").replaceChildren(...done.summary.map((line) => element("li", {}, line)));
    notify(`${change.op} done: ${done.summary.join("; ")}`);
    if (change.form) change.form.reset();
  } catch (error) {
    failed(error);
  }
  await refreshTaxonomy().catch(failed);
  refreshHealth().catch(failed);
  if (state.image) {
    api("GET", `/images/${state.image.id}`).then(showImage, failed);
  }
});

async function refreshTaxonomy() {
  const taxonomy = await refreshClasses();
  $("#taxonomy-version").textContent = `version ${taxonomy.taxonomy_version}`;
  $("#class-list").replaceChildren(
    ...taxonomy.classes.map((c) =>
      element("li", {}, element("span", { class: "swatch", style: `background:${colour(c.name)}` }), `${c.name}: ${c.boxes} box${c.boxes === 1 ? "" : "es"}`),
    ),
  );
  const partial = Object.entries(taxonomy.partial_label_sets);
  $("#partial-list").replaceChildren(
    ...(partial.length
      ? partial.map(([set, n]) => element("li", {}, `${set}: ${n} box${n === 1 ? "" : "es"}`))
      : [element("li", { class: "hint" }, "none")]),
  );
  const history = await api("GET", "/taxonomy/history");
  $("#history tbody").replaceChildren(
    ...history.slice(-60).reverse().map((e) =>
      element("tr", { class: e.undone ? "undone" : "" },
        element("td", {}, String(e.id)), element("td", {}, e.kind + (e.undone ? " (undone)" : "")),
        element("td", {}, editText(e)), element("td", {}, e.author),
        element("td", {}, e.time)),
    ),
  );
}

// -- teach and model versions ----------------------------------------------------------------------

let supportRequest = 0;

async function refreshSupport() {
  const name = $("#learn-class").value;
  const thumbs = $("#learn-thumbs");
  thumbs.replaceChildren();
  if (!name) {
    $("#learn-support").textContent = "Add the class in Taxonomy and mark its boxes first.";
    return;
  }
  const request = ++supportRequest;
  const listing = await api("GET", `/images?${new URLSearchParams({ class: name, split: "train", limit: 48 })}`);
  if (request !== supportRequest) return; // another class was chosen meanwhile
  const images = listing.total === 1 ? "1 TRAIN image holds" : `${listing.total} TRAIN images hold`;
  $("#learn-support").textContent = listing.total
    ? `${images} a box that may be ${name}; learn uses the boxes marked exactly ${name}.`
    : `No TRAIN image holds a box of ${name} yet: mark a few first.`;
  for (const image of listing.images) {
    const picture = element("img", { alt: image.name, title: image.name });
    thumbs.append(picture);
    imageBlobUrl(image.id).then((url) => (picture.src = url), () => {});
  }
}

$("#learn-class").addEventListener("change", () => refreshSupport().catch(failed));

// A learn job's steps as GET /api/jobs/{id} names them, in words.
const LEARN_PHASES = {
  support: "embedding the marked boxes",
  localizer: "adapting the localizer",
  recognizer: "tuning the recognition head where it helps",
  transductive: "refining on unlabelled images",
  threshold: "setting the threshold",
  exports: "writing the model's exports",
  before: "predicting with the previous version",
  after: "predicting with the new version",
};

$("#learn-start").addEventListener("click", async () => {
  const how = document.querySelector("input[name=learn-how]:checked").value;
  // "prototype" is the prototype alone; the others leave the recognition head to learn's check
  const body = {
    class: $("#learn-class").value,
    adapt: how !== "prototype",
    adapt_localizer: how === "adapt-localizer",
    adapt_recognizer: how === "prototype" ? false : null,
  };
  $("#learn-start").disabled = true;
  $("#learn-job").hidden = false;
  $("#learn-outcome").hidden = true;
  try {
    const job = await followJob(await api("POST", "/learn", { json: body }), $("#learn-progress"),
      $("#learn-state"), LEARN_PHASES);
    if (job.state === "done") {
      const r = job.result;
      $("#learn-state").textContent =
        `learned ${r.class} in ${r.learn_seconds} s: model version ${r.version} is current (was ${r.previous_version})`;
      showOutcome(r.class, r.outcome);
    } else {
      $("#learn-state").textContent = `job ${job.id} failed: ${job.error}; the model is as it was`;
    }
  } catch (error) {
    $("#learn-state").textContent = error.message;
  } finally {
    $("#learn-start").disabled = false;
  }
  await refreshModels().catch(failed);
});

const OUTCOME_ROWS = [
  ["named_right", "named right"],
  ["unknown", "reported unknown"],
  ["named_other", "named as another type"],
  ["missed", "missed"],
];

function share(value) {
  return value === null || value === undefined ? "–" : `${Math.round(100 * value)}%`;
}

// What a finished learn job changed: its boxes' naming and image precision/recall, before and after.
function showOutcome(name, outcome) {
  $("#learn-outcome").hidden = false;
  $("#learn-outcome-note").textContent =
    (outcome.basis === "leave-one-out" ? "Leave-one-out on the support images: " : "") + outcome.note + ".";
  const table = $("#learn-outcome-table");
  if (!outcome.before) {
    table.hidden = true;
    return;
  }
  table.hidden = false;
  const { before, after } = outcome;
  table.querySelector("thead").replaceChildren(element("tr", {},
    element("th", {}, `${before.boxes} ${name} box${before.boxes === 1 ? "" : "es"}`),
    element("th", {}, `before (v${before.version})`),
    element("th", {}, `after (v${after.version})`)));
  const cell = (side, key) => `${side[key].count} (${share(side[key].share)})`;
  // no precision without a flagged image: say so rather than print a bare dash
  const rate = (side, key) => (side[key] === null && key === "image_precision" ? "none flagged" : share(side[key]));
  table.querySelector("tbody").replaceChildren(
    ...OUTCOME_ROWS.map(([key, text]) => element("tr", { "data-row": key },
      element("td", {}, text), element("td", {}, cell(before, key)), element("td", {}, cell(after, key)))),
    ...[["image_precision", "image precision"], ["image_recall", "image recall"]].map(([key, text]) =>
      element("tr", { "data-row": key },
        element("td", {}, text), element("td", {}, rate(before, key)), element("td", {}, rate(after, key)))),
  );
}

function showModels(models) {
  $("#models tbody").replaceChildren(
    ...models.versions.slice().reverse().map((v) =>
      element("tr", { class: v.current ? "current" : "" },
        element("td", {}, `v${v.version}${v.current ? " (current)" : ""}`),
        element("td", {}, v.classes.join(", ")), element("td", {}, v.note), element("td", {}, v.created),
        element("td", {}, v.current ? "" : element("button", { onclick: () => useVersion(v.version) }, "Use"))),
    ),
  );
  refreshHealth().catch(failed);
}

async function refreshModels() {
  showModels(await api("GET", "/models"));
}

async function useVersion(version) {
  try {
    showModels(await api("POST", "/models/use", { json: { version } }));
    notify(`Model version ${version} is current.`);
  } catch (error) {
    failed(error);
  }
}

$("#models-undo").addEventListener("click", async () => {
  try {
    const models = await api("POST", "/models/undo");
    showModels(models);
    notify(`Model version ${models.current} is current again.`);
  } catch (error) {
    failed(error);
  }
});

// -- unknowns --------------------------------------------------------------------------------------

const blobUrls = new Map();
function cachedBlobUrl(imageId) {
  if (!blobUrls.has(imageId)) blobUrls.set(imageId, imageBlobUrl(imageId));
  return blobUrls.get(imageId);
}

// A member's box cut out of its image, with a margin, scaled into a square.
async function crop(member, size = 88) {
  const canvas = element("canvas", { width: size, height: size, class: "crop", title: `${member.name} · ${member.score.toFixed(2)}` });
  const picture = new Image();
  picture.src = await cachedBlobUrl(member.image);
  await picture.decode();
  const [x1, y1, x2, y2] = member.box;
  const side = Math.max(x2 - x1, y2 - y1) * 1.3 + 4;
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.fillStyle = "#222";
  context.fillRect(0, 0, size, size);
  context.drawImage(picture, cx - side / 2, cy - side / 2, side, side, 0, 0, size, size);
  const scale = size / side;
  context.strokeStyle = "#f032e6";
  context.lineWidth = 2;
  context.strokeRect((x1 - cx + side / 2) * scale, (y1 - cy + side / 2) * scale, (x2 - x1) * scale, (y2 - y1) * scale);
  return canvas;
}

const CROPS_SHOWN = 12;

async function refreshUnknowns() {
  const similarity = $("#unknowns-similarity").value || "0.8";
  const listing = await api("GET", `/unknowns?${new URLSearchParams({ similarity })}`);
  const cache = listing.cache;
  const looked = cache.done < cache.total ? ` (the model has looked at ${cache.done} of ${cache.total} images so far)` : "";
  const some = listing.grouped < listing.unknowns ? ` (the ${listing.grouped} highest-scoring grouped)` : "";
  $("#unknowns-summary").textContent = listing.groups.length
    ? `${listing.unknowns} unknown detection${listing.unknowns === 1 ? "" : "s"} by model v${listing.model_version} in ${listing.groups.length} group${listing.groups.length === 1 ? "" : "s"}${some}${looked}.`
    : `Model v${listing.model_version} reports no unknown detection that nobody has named${looked}.`;
  const holder = $("#unknown-groups");
  holder.replaceChildren();
  for (const [index, group] of listing.groups.entries()) {
    const crops = element("div", { class: "crops" });
    const input = element("input", { list: "class-names", placeholder: "class (new or existing)", required: "" });
    const form = element("form", { class: "name-group" }, input, element("button", {}, "Name this group"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      nameGroup(group, input.value.trim(), similarity).catch(failed);
    });
    const more = group.size > CROPS_SHOWN ? ` (${CROPS_SHOWN} shown)` : "";
    holder.append(element("div", { class: "group", "data-group": group.key },
      element("h3", {}, `Group ${index + 1}: ${group.size} box${group.size === 1 ? "" : "es"} in ${group.images} image${group.images === 1 ? "" : "s"}${more}`),
      crops, form));
    for (const member of group.members.slice(0, CROPS_SHOWN)) {
      crop(member).then((canvas) => crops.append(canvas), () => {});
    }
  }
}

async function nameGroup(group, name, similarity) {
  if (!name) return;
  const done = await api("POST", `/unknowns/${group.key}/name`, { json: { class: name, similarity: Number(similarity) } });
  const boxes = done.added.length + done.labelled.length;
  notify(`${boxes} box${boxes === 1 ? "" : "es"} marked ${done.class}${done.class_created ? " (a new class)" : ""}: learn it in Teach.`);
  await refreshClasses();
  await refreshUnknowns();
}

$("#unknowns-form").addEventListener("submit", (event) => {
  event.preventDefault();
  refreshUnknowns().catch(failed);
});

// Poll a background job until it ends, showing its progress in `progress` and `label`.
async function followJob(job, progress, label, phases = {}) {
  while (job.state === "queued" || job.state === "running") {
    progress.value = job.progress;
    const step = job.phase ? `: ${phases[job.phase] || job.phase}` : "";
    label.textContent = `job ${job.id} ${job.state}${step} (${Math.round(job.progress * 100)}%)`;
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await api("GET", `/jobs/${job.id}`);
  }
  progress.value = job.progress;
  return job;
}

function showSuggestion(found) {
  const open = element("button", { class: "link", title: found.name }, `Image ${found.image}`);
  open.addEventListener("click", () => {
    showTab("images");
    openImage(found.image).catch(failed);
  });
  const picture = element("div", { class: "suggestion-crop" });
  if (found.box) crop(found).then((canvas) => picture.append(canvas), () => {});
  return element("li", { class: "suggestion", "data-image": found.image }, picture,
    element("div", {}, open, ` · ${found.score.toFixed(2)}`, element("div", { class: "hint" }, found.why),
      element("div", { class: "hint file-name" }, found.name)));
}

$("#suggest-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const chosen = $("#suggest-class").value;
  const body = { class: chosen || null, n: Number($("#suggest-n").value) || 20 };
  $("#suggest-start").disabled = true;
  $("#suggest-job").hidden = false;
  $("#suggestions").replaceChildren();
  try {
    const job = await followJob(await api("POST", "/suggest", { json: body }), $("#suggest-progress"),
      $("#suggest-state"), { rank: "the model looks at each unlabelled image" });
    if (job.state === "done") {
      const r = job.result;
      const asked = r.class ? `holding ${r.class}` : "holding a defect no known type explains";
      $("#suggest-state").textContent =
        `the ${r.suggestions.length} of ${r.unlabelled} unlabelled images model v${r.model_version} finds most likely ${asked}`;
      $("#suggestions").replaceChildren(...r.suggestions.map(showSuggestion));
    } else {
      $("#suggest-state").textContent = `job ${job.id} failed: ${job.error}`;
    }
  } catch (error) {
    $("#suggest-state").textContent = error.message;
  } finally {
    $("#suggest-start").disabled = false;
  }
});

// -- predict ---------------------------------------------------------------------------------------

dropZone($("#predict-zone"), $("#predict-input"), async ([file]) => {
  if (!file) return;
  $("#predict-summary").textContent = `${file.name}: asking the model…`;
  try {
    const prediction = await predictBlob(file, file.name);
    const picture = element("img", { src: URL.createObjectURL(file), alt: file.name });
    await picture.decode();
    const width = picture.naturalWidth;
    const height = picture.naturalHeight;
    picture.style.width = `${displayWidth(width, height)}px`;
    const overlay = svg("svg", { class: "overlay", preserveAspectRatio: "none" });
    $("#predict-holder").replaceChildren(element("div", { class: "frame" }, picture, overlay));
    const found = prediction.detections;
    drawOverlay(overlay, width, height, found.map((d) => ({
      box: d.box, text: `${d.class} ${d.score.toFixed(2)}`, colour: colour(d.class), outline: true,
    })));
    $("#predict-summary").textContent =
      `${file.name}: ${found.length} detection${found.length === 1 ? "" : "s"} by model v${prediction.model_version}`;
    $("#predict-list").replaceChildren(
      ...found.map((d) => element("li", {}, `${d.class} ${d.score.toFixed(2)} [${d.box.map((v) => Math.round(v)).join(", ")}]`)),
    );
  } catch (error) {
    $("#predict-summary").textContent = `${file.name}: ${error.message}`;
  }
});

// -- tabs and start --------------------------------------------------------------------------------

const TAB_REFRESH = {
  images: () => refreshGallery(),
  taxonomy: () => refreshTaxonomy(),
  unknowns: () => refreshUnknowns(),
  teach: () => Promise.all([refreshClasses().then(refreshSupport), refreshModels()]),
  predict: () => Promise.resolve(),
};

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== name;
  location.hash = name;
  TAB_REFRESH[name]().catch(failed);
}

for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));

async function start() {
  await Promise.all([refreshHealth(), refreshClasses()]);
  const wanted = location.hash.slice(1);
  showTab(wanted in TAB_REFRESH ? wanted : "images");
}

if (sessionStorage.getItem("qs.token")) start().catch(failed);
else askForToken();
