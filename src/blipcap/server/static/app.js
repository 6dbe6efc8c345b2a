// blipcap web page: plain JavaScript, no build step.
"use strict";

// ------------------------------------------------------------------ counting
// The same rules as blipcap/social.py (a test checks that both agree).
const GRAPHEMES = typeof Intl !== "undefined" && Intl.Segmenter
  ? new Intl.Segmenter(undefined, { granularity: "grapheme" })
  : null;

function clusters(text) {
  if (GRAPHEMES) return Array.from(GRAPHEMES.segment(text), (s) => s.segment);
  return Array.from(text); // old browsers: code points (counts emoji sequences high, never low)
}

function graphemes(text) {
  return clusters(text).length;
}

const URL_SCHEME = /\bhttps?:\/\/[^\s<>"']+?(?=[.,;:!?)\]]*(?:\s|$))/giu;
const URL_WWW = /\bwww\.[^\s<>"']+?(?=[.,;:!?)\]]*(?:\s|$))/giu;
const URL_BARE = new RegExp(
  String.raw`(?<![\p{L}\p{N}_@./-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+` +
    String.raw`(?:com|org|net|edu|gov|io|co|uk|de|fr|jp|app|dev|ly|me|tv|info|biz)` +
    String.raw`(?:\/[^\s<>"']*?)?(?=[.,;:!?)\]]*(?:\s|$))`,
  "giu",
);
const EMOJI = /[\p{Emoji_Presentation}\p{Regional_Indicator}\uFE0F\u20E3]/u;
const X_LIGHT = [[0, 4351], [8192, 8205], [8208, 8223], [8242, 8247]];

function findUrls(text, platform) {
  const patterns = [URL_SCHEME];
  if (platform.bare_domains) patterns.push(URL_WWW, URL_BARE);
  const spans = [];
  for (const pattern of patterns) {
    pattern.lastIndex = 0;
    for (const m of text.matchAll(pattern)) {
      const start = m.index;
      const end = m.index + m[0].length;
      if (!spans.some(([s, e]) => s < end && start < e)) spans.push([start, end]);
    }
  }
  return spans.sort((a, b) => a[0] - b[0]);
}

function xWeight(cluster) {
  if (EMOJI.test(cluster)) return 200;
  let total = 0;
  for (const ch of cluster) {
    const cp = ch.codePointAt(0);
    total += X_LIGHT.some(([lo, hi]) => lo <= cp && cp <= hi) ? 100 : 200;
  }
  return total;
}

// Length of `text` as `platform` counts it; kind is "post" or "alt".
function countText(text, platform, kind) {
  if (kind === "alt") return graphemes(text);
  if (platform.weighted) text = text.normalize("NFC");
  const urls = platform.url_length != null ? findUrls(text, platform) : [];
  const pieces = [];
  let pos = 0;
  for (const [start, end] of urls) {
    pieces.push(text.slice(pos, start));
    pos = end;
  }
  pieces.push(text.slice(pos));
  const urlTotal = urls.length * (platform.url_length || 0);
  if (!platform.weighted) return urlTotal + pieces.reduce((n, p) => n + graphemes(p), 0);
  let scaled = 0;
  for (const piece of pieces) for (const c of clusters(piece)) scaled += xWeight(c);
  return urlTotal + Math.floor(scaled / 100);
}

// ------------------------------------------------------------------ API
const state = { info: null, key: sessionStorage.getItem("blipcap-key") || "", counter: 0 };
const $ = (sel, root = document) => root.querySelector(sel);
const fmt = (n) => n.toLocaleString("en");

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) {
    $("#api-key-section").hidden = false;
    $("#api-key").focus();
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    const retry = response.headers.get("Retry-After");
    const error = new Error(detail + (retry ? ` (try again in ${retry} s)` : ""));
    error.status = response.status;
    throw error;
  }
  return body;
}

function say(id, text) {
  $(id).textContent = text;
}

async function loadInfo() {
  try {
    state.info = await api("/v1/info");
  } catch (e) {
    say("#server-status", e.status === 401 ? "Enter the API key to continue." : "The server is not answering: " + e.message);
    return;
  }
  $("#api-key-section").hidden = true;
  for (const el of document.querySelectorAll("[data-feature]")) {
    el.hidden = !state.info.features.includes(el.dataset.feature);
  }
  $("#random-weights").hidden = !state.info.random_weights;
  pollReady();
}

async function pollReady() {
  const response = await fetch("/readyz").catch(() => null);
  const body = response ? await response.json().catch(() => ({})) : {};
  if (response && response.ok) {
    say("#server-status", "Ready. Model: " + (body.model || "unknown") + ".");
    $("#random-weights").hidden = !body.random_weights;
    return;
  }
  say("#server-status", "The model is not ready yet (" + (body.status || "starting") + ")…");
  setTimeout(pollReady, 2000);
}

// ------------------------------------------------------------------ describing images
function settings() {
  const platforms = Array.from(document.querySelectorAll("input[name=platform]:checked"), (el) => el.value);
  const variants = Math.min(10, Math.max(1, parseInt($("#variants").value, 10) || 1));
  return {
    platforms: platforms.length ? platforms : ["x"],
    variants,
    hashtags: $("#hashtags").checked,
    attribution: $("#attribution").checked,
  };
}

function newCard(name, thumbUrl) {
  const id = "r" + ++state.counter;
  const li = $("#result-template").content.firstElementChild.cloneNode(true);
  li.id = id;
  $(".name", li).textContent = name;
  const img = $(".thumb", li);
  if (thumbUrl) {
    img.src = thumbUrl;
    img.alt = "Your image: " + name;
  } else {
    img.remove();
  }
  $(".state", li).textContent = "Describing…";
  const alt = $(".alt", li);
  alt.id = id + "-alt";
  $(".field .label", li).htmlFor = alt.id;
  $("#results").prepend(li);
  return li;
}

async function describe(item) {
  const s = settings();
  const thumb = item.file ? URL.createObjectURL(item.file) : null;
  const card = newCard(item.name, thumb);
  say("#describe-status", "Describing " + item.name + "…");
  let body;
  const init = { method: "POST" };
  if (item.file) {
    const form = new FormData();
    form.append("files", item.file, item.name);
    for (const p of s.platforms) form.append("platforms", p);
    form.append("variants", String(s.variants));
    form.append("hashtags", String(s.hashtags));
    form.append("attribution", String(s.attribution));
    init.body = form;
  } else {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify({
      images: [{ url: item.url }],
      platforms: s.platforms,
      variants: s.variants,
      hashtags: s.hashtags,
      attribution: s.attribution,
    });
  }
  try {
    body = await api("/v1/social", init);
  } catch (e) {
    $(".state", card).textContent = "Failed: " + e.message;
    card.classList.add("failed");
    say("#describe-status", "Could not describe " + item.name + ": " + e.message);
    return;
  }
  renderCard(card, body.results);
  say("#describe-status", "Described " + item.name + ".");
}

function renderCard(card, records) {
  const first = records[0];
  if (first.error) {
    $(".state", card).textContent = "Failed: " + first.error.message;
    card.classList.add("failed");
    return;
  }
  const best = first.variants[0];
  $(".state", card).textContent = "Done.";
  $(".caption", card).textContent = best.caption;
  const alt = $(".alt", card);
  alt.value = first.alt_text;
  const platforms = $(".platforms", card);
  const altCounters = [];
  for (const record of records) {
    platforms.append(platformBlock(card, record, altCounters));
  }
  const altCounter = $(".field .counter", card);
  const updateAlt = () => {
    altCounter.textContent = fmt(graphemes(alt.value)) + " characters";
    for (const update of altCounters) update(alt.value);
  };
  alt.addEventListener("input", updateAlt);
  updateAlt();
  $(".copy", card).addEventListener("click", () => copy(alt.value, "Alt text copied."));
  const who = first.random_weights ? " (random test weights)" : "";
  $(".provenance", card).textContent =
    "Machine-generated by " + first.model + who + " on " + first.backend + "/" + first.device + ".";
  $(".body", card).hidden = false;
}

function platformBlock(card, record, altCounters) {
  const platform = state.info.platforms[record.platform];
  const block = document.createElement("section");
  block.className = "platform";
  const base = card.id + "-" + record.platform;
  const heading = document.createElement("h5");
  heading.textContent = platform.name;
  block.append(heading);

  const label = document.createElement("label");
  label.htmlFor = base + "-post";
  label.className = "label";
  label.textContent = platform.name + " post text";
  const area = document.createElement("textarea");
  area.id = base + "-post";
  area.rows = 3;
  area.value = record.text;
  const counter = document.createElement("span");
  counter.className = "counter";
  counter.id = base + "-count";
  counter.setAttribute("aria-live", "polite");
  area.setAttribute("aria-describedby", counter.id);
  const update = () => setCounter(counter, countText(area.value, platform, "post"), platform.post_limit);
  area.addEventListener("input", update);
  update();
  const copyButton = document.createElement("button");
  copyButton.type = "button";
  copyButton.textContent = "Copy " + platform.name + " text";
  copyButton.addEventListener("click", () => copy(area.value, platform.name + " text copied."));
  const foot = document.createElement("div");
  foot.className = "field-foot";
  foot.append(counter, copyButton);

  const altLine = document.createElement("p");
  altLine.className = "alt-limit";
  altCounters.push((text) => {
    const n = countText(text, platform, "alt");
    altLine.textContent = "";
    const span = document.createElement("span");
    setCounter(span, n, platform.alt_limit);
    altLine.append("Alt text on " + platform.name + ": ", span);
  });
  const field = document.createElement("div");
  field.className = "field";
  field.append(label, area, foot);
  block.append(field, altLine);

  if (record.variants.length > 1) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Other variants (" + (record.variants.length - 1) + ")";
    details.append(summary);
    const list = document.createElement("ol");
    record.variants.slice(1).forEach((variant, i) => {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.textContent = variant.text;
      const use = document.createElement("button");
      use.type = "button";
      use.textContent = "Use variant " + (i + 2);
      use.addEventListener("click", () => {
        area.value = variant.text;
        update();
        area.focus();
      });
      li.append(text, " ", use);
      list.append(li);
    });
    details.append(list);
    block.append(details);
  }
  return block;
}

function setCounter(el, n, limit) {
  const over = n - limit;
  el.textContent = fmt(n) + " / " + fmt(limit) + (over > 0 ? " - " + fmt(over) + " over the limit" : "");
  el.classList.toggle("over", over > 0);
}

async function copy(text, message) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  say("#describe-status", message);
}

function addFiles(files) {
  const images = Array.from(files).filter((f) => f.type.startsWith("image/") || f.type === "");
  if (!images.length) {
    say("#describe-status", "That is not an image file.");
    return;
  }
  for (const file of images) describe({ file, name: file.name || "pasted image" });
}

// ------------------------------------------------------------------ documents and search
async function readDocument(event) {
  event.preventDefault();
  const file = $("#document-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("files", file, file.name);
  say("#document-status", "Reading " + file.name + "…");
  const out = $("#document-result");
  out.textContent = "";
  try {
    const body = await api("/v1/documents", { method: "POST", body: form });
    const heading = document.createElement("h3");
    heading.textContent = file.name;
    const description = document.createElement("p");
    description.textContent = body.description || "";
    const label = document.createElement("h4");
    label.textContent = "Text (OCR)";
    const text = document.createElement("pre");
    text.className = "ocr";
    text.tabIndex = 0;
    text.textContent = body.text || "(no text found)";
    out.append(heading, description, label, text);
    say("#document-status", "Read " + file.name + ".");
  } catch (e) {
    say("#document-status", "Could not read " + file.name + ": " + e.message);
  }
}

// Thumbnails are fetched like any API call (with the key, when there is one).
async function thumbnail(path) {
  const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
  const response = await fetch(path, { headers }).catch(() => null);
  return response && response.ok ? URL.createObjectURL(await response.blob()) : null;
}

async function search(event) {
  event.preventDefault();
  const q = $("#query").value.trim();
  if (!q) return;
  const list = $("#search-results");
  list.textContent = "";
  say("#search-status", "Searching…");
  try {
    const body = await api("/v1/search?q=" + encodeURIComponent(q));
    for (const hit of body.results) {
      const li = document.createElement("li");
      if (hit.thumbnail) {
        const img = document.createElement("img");
        img.alt = hit.random_weights ? "" : hit.caption || "";
        img.className = "thumb";
        li.append(img);
        thumbnail(hit.thumbnail).then((url) => {
          if (url) img.src = url;
        });
      }
      const text = document.createElement("div");
      const path = document.createElement("p");
      path.className = "name";
      path.textContent = hit.path;
      const caption = document.createElement("p");
      caption.textContent = (hit.random_weights ? "[random test model] " : "") + (hit.caption || "");
      text.append(path, caption);
      li.append(text);
      list.append(li);
    }
    say("#search-status", body.results.length + " result" + (body.results.length === 1 ? "" : "s") + " for “" + q + "”.");
  } catch (e) {
    say("#search-status", "Search failed: " + e.message);
  }
}

// ------------------------------------------------------------------ wiring
function init() {
  const zone = $("#drop-zone");
  $("#files").addEventListener("change", (e) => {
    addFiles(e.target.files);
    e.target.value = "";
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData ? e.clipboardData.files : []);
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  $("#url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("#image-url").value.trim();
    if (url) describe({ url, name: url });
  });
  $("#api-key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("#api-key").value;
    sessionStorage.setItem("blipcap-key", state.key);
    loadInfo();
  });
  $("#document-form").addEventListener("submit", readDocument);
  $("#search-form").addEventListener("submit", search);
  loadInfo();
}

window.blipcapCount = countText; // for tests: the page's counting, compared with the server's
document.addEventListener("DOMContentLoaded", init);
