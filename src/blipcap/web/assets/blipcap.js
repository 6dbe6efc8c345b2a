// blipcap in the browser: BLIP captioning on onnxruntime-web, client-side.
//
//   import { loadCaptioner } from "./blipcap.js";
//   const captioner = await loadCaptioner(new URL("./", import.meta.url));
//   const result = await captioner.caption(file, { preset: "default" });
//
// The bundle (written by `blipcap export web`) holds the two ONNX graphs of
// `blipcap export onnx`, the tokenizer vocabulary, blipcap_web.json (model,
// preprocessing, token ids, presets, provenance) and onnxruntime-web's files
// under ort/. Nothing is fetched from elsewhere. WASM by default, with threads
// when the page is cross-origin isolated (COOP/COEP headers); WebGPU when asked
// for ("auto" picks it where the browser has it and the bundle ships it).

import { decodeImage, preprocess } from "./preprocess.js";
import { Tokenizer, cleanCaption } from "./tokenizer.js";
import { generate } from "./decoding.js";

export { decodeImage, preprocess } from "./preprocess.js";
export { Tokenizer, cleanCaption } from "./tokenizer.js";

async function fetchJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot load ${url}: HTTP ${r.status}`);
  return r.json();
}

function names(prefix, layers) {
  const out = [];
  for (let i = 0; i < layers; i++) out.push(`${prefix}_key_${i}`, `${prefix}_value_${i}`);
  return out;
}

async function hasWebGPU() {
  if (typeof navigator === "undefined" || !navigator.gpu) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

/** Which execution provider to use: "wasm" or "webgpu" ("auto": WebGPU when it works here). */
export async function pickBackend(requested, bundle) {
  if (requested === "wasm") return "wasm";
  if (requested === "webgpu" && !bundle.ort.webgpu) {
    throw new Error("this bundle has no WebGPU runtime; export it again without --no-webgpu");
  }
  const webgpu = Boolean(bundle.ort.webgpu) && (await hasWebGPU());
  if (requested === "webgpu" && !webgpu) throw new Error("this browser has no usable WebGPU adapter");
  if (requested !== "webgpu" && requested !== "auto") throw new Error(`unknown backend ${requested}`);
  return webgpu ? "webgpu" : "wasm";
}

/**
 * Load the bundle at `base` (a URL ending in "/").
 * options: backend "auto" | "wasm" | "webgpu" (default "auto"); threads (default: all
 * cores when cross-origin isolated, else 1).
 */
export async function loadCaptioner(base, options = {}) {
  base = new URL(base, location.href);
  const bundle = await fetchJSON(new URL("blipcap_web.json", base));
  const backend = await pickBackend(options.backend || "auto", bundle);
  const ortFile = backend === "webgpu" ? bundle.ort.webgpu : bundle.ort.wasm;
  const ort = await import(new URL(`ort/${ortFile}`, base).href);
  const isolated = globalThis.crossOriginIsolated === true;
  const cores = navigator.hardwareConcurrency || 1;
  const threads = isolated ? Math.max(1, options.threads || cores) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL("ort/", base).href;
  ort.env.logLevel = "error";
  const vocab = await fetchJSON(new URL(bundle.files.vocab, base));
  const sessionOptions = {
    executionProviders: [backend],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
  };
  const create = async (file) => {
    const r = await fetch(new URL(file, base));
    if (!r.ok) throw new Error(`cannot load ${file}: HTTP ${r.status}`);
    return ort.InferenceSession.create(new Uint8Array(await r.arrayBuffer()), sessionOptions);
  };
  const vision = await create(bundle.files.vision);
  const decoder = await create(bundle.files.decoder);
  return new Captioner({ ort, bundle, vision, decoder, vocab, backend, threads, isolated });
}

export class Captioner {
  constructor({ ort, bundle, vision, decoder, vocab, backend, threads, isolated }) {
    Object.assign(this, { ort, bundle, vision, decoder, backend, threads, isolated });
    this.tokenizer = new Tokenizer(vocab, bundle.tokenizer);
    const m = bundle.model;
    this.crossNames = names("cross", m.layers);
    this.pastNames = names("past", m.layers);
    this.presentNames = names("present", m.layers);
    this.special = { eos: bundle.tokenizer.eos_token_id, pad: bundle.tokenizer.pad_token_id };
  }

  /** Options of a preset ("default", "coco") with overrides (CaptionOptions field names). */
  options(preset = "default", overrides = {}) {
    const base = this.bundle.presets[preset];
    if (!base) throw new Error(`unknown preset ${preset}; choose one of ${Object.keys(this.bundle.presets)}`);
    return { ...base, ...overrides };
  }

  /** RGBA pixels -> normalized (3, H, W) float32 (and the resized RGB bytes). */
  preprocess(rgba, width, height) {
    return preprocess(rgba, width, height, this.bundle.preprocess);
  }

  /** Run the vision graph; returns a start(rows, maxLen) function for decoding.js. */
  async encode(pixels) {
    const { ort } = this;
    const { height, width } = this.bundle.preprocess;
    const input = new ort.Tensor("float32", pixels, [1, 3, height, width]);
    const out = await this.vision.run({ pixel_values: input });
    const cross = this.crossNames.map((n) => out[n]);
    const m = this.bundle.model;
    const start = async (rows, maxLen) => {
      if (maxLen > m.max_positions) {
        throw new Error(`a total length of ${maxLen} tokens exceeds the model's ${m.max_positions} positions`);
      }
      return new DecoderSession(this, cross, rows);
    };
    start.dispose = () => cross.forEach((t) => t.dispose());
    return start;
  }

  /** Token ids for pixels: per caption (K with beam search), the generated ids. */
  async generateTokens(pixels, opts) {
    const promptIds = this.tokenizer.promptIds(opts.prompt);
    const start = await this.encode(pixels);
    try {
      return await generate(start, promptIds, opts, this.special);
    } finally {
      start.dispose();
    }
  }

  /** Generated ids -> caption text, as blipcap's Captioner.caption_text. */
  captionText(tokens, opts) {
    const prompt = opts.prompt ? this.tokenizer.promptIds(opts.prompt).slice(1) : [];
    let text;
    if (!prompt.length) text = this.tokenizer.decode(tokens);
    else if (opts.strip_prompt) text = this.tokenizer.decodeContinuation(prompt, tokens);
    else text = this.tokenizer.decode([...prompt, ...tokens]);
    return opts.clean_artifacts ? cleanCaption(text) : text;
  }

  /** Caption a Blob/File: the record blipcap writes, plus timings (ms). */
  async caption(blob, { preset = "default", ...overrides } = {}) {
    const t0 = performance.now();
    const { rgba, width, height } = await decodeImage(blob);
    return this.captionPixels(rgba, width, height, { preset, ...overrides }, t0);
  }

  async captionPixels(rgba, width, height, { preset = "default", ...overrides } = {}, t0 = performance.now()) {
    const opts = this.options(preset, overrides);
    const t1 = performance.now();
    const { pixels } = this.preprocess(rgba, width, height);
    const t2 = performance.now();
    const tokens = await this.generateTokens(pixels, opts);
    const t3 = performance.now();
    const captions = tokens.map((t) => this.captionText(t, opts));
    return this.record(captions, tokens, opts, {
      decode_image: t1 - t0, preprocess: t2 - t1, model: t3 - t2, total: performance.now() - t0,
    });
  }

  record(captions, tokens, opts, ms) {
    const b = this.bundle;
    const rec = {
      caption: captions[0],
      captions,
      tokens,
      model: b.source.model,
      revision: b.source.revision,
      backend: `onnxruntime-web/${this.backend}`,
      threads: this.threads,
      options: opts,
      machine_generated: true,
      blipcap_version: b.blipcap_version,
      ms,
    };
    if (b.random_weights) rec.random_weights = true;
    return rec;
  }
}

class DecoderSession {
  constructor(captioner, cross, rows) {
    const { ort, bundle } = captioner;
    const m = bundle.model;
    this.c = captioner;
    this.cross = cross;
    this.rows = rows;
    const empty = new ort.Tensor("float32", new Float32Array(0), [rows, m.heads, 0, m.head_dim]);
    this.past = captioner.pastNames.map(() => empty);
    this.owned = [];
    this.cacheRows = [...Array(rows).keys()];
  }

  async stepRows(ids) {
    const { ort } = this.c;
    const t = ids[0].length;
    const feeds = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.flat(), BigInt), [this.rows, t]),
      cache_rows: new ort.Tensor("int64", BigInt64Array.from(this.cacheRows, BigInt), [this.rows]),
    };
    this.c.pastNames.forEach((n, i) => { feeds[n] = this.past[i]; });
    this.c.crossNames.forEach((n, i) => { feeds[n] = this.cross[i]; });
    const out = await this.c.decoder.run(feeds);
    this.owned.forEach((x) => x.dispose());
    this.past = this.c.presentNames.map((n) => out[n]);
    this.owned = this.past;
    this.cacheRows = [...Array(this.rows).keys()];
    return out.logits.data;
  }

  reorder(rows) {
    this.cacheRows = rows;
  }

  dispose() {
    this.owned.forEach((x) => x.dispose());
    this.owned = [];
  }
}
