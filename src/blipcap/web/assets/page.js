// The example page: caption chosen images client-side and show where the caption came from.
import { loadCaptioner } from "./blipcap.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

async function main() {
  const captioner = await loadCaptioner(new URL("./", import.meta.url), {
    backend: params.get("backend") || "auto",
    threads: Number(params.get("threads")) || undefined,
  });
  window.blipcap = captioner; // for scripts and tests driving the page
  const b = captioner.bundle;
  $("random-weights").hidden = !b.random_weights;
  $("provenance").textContent = `Model ${b.source.model} (${b.source.revision || "no revision"})` +
    `${b.random_weights ? ", random weights" : ""}, blipcap ${b.blipcap_version}.`;
  $("status").textContent = `Ready: ${captioner.backend}, ${captioner.threads} thread(s)` +
    `${captioner.isolated ? "" : " (not cross-origin isolated: one thread)"}.`;
  $("file").disabled = false;
  $("file").addEventListener("change", async (event) => {
    for (const file of event.target.files) {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      const text = document.createElement("div");
      const caption = document.createElement("p");
      caption.className = "caption";
      caption.textContent = "Captioning…";
      const meta = document.createElement("p");
      meta.className = "meta";
      text.append(caption, meta);
      li.append(img, text);
      $("results").prepend(li);
      try {
        const r = await captioner.caption(file, { preset: $("preset").value });
        caption.textContent = r.caption;
        img.alt = r.caption;
        meta.textContent = `${file.name}: ${r.ms.total.toFixed(0)} ms, ${r.backend}` +
          `${r.random_weights ? " - random weights: not a real description" : ""}`;
        li.dataset.record = JSON.stringify(r);
      } catch (err) {
        caption.textContent = `Error: ${err.message}`;
      }
    }
  });
}

main().catch((err) => {
  $("status").textContent = `The model could not be loaded: ${err.message}`;
  window.blipcapError = String(err && err.stack || err);
});
