// Greedy decoding and beam search, ported from blipcap/decoding.py (transformers'
// semantics) for one image at a time. Scores are float32 as in the numpy path: every
// arithmetic step is rounded with Math.fround where numpy rounds to float32.
//
// start(rows, maxLen) gives a session with stepRows(ids: rows arrays of T token ids) ->
// Float32Array logits (rows x vocab), reorder(sourceRows) and dispose(); see blipcap.js.

const f = Math.fround;
const NEG = f(-1e9);

/** transformers' token limits: [min total length, max total length] (CaptionOptions.token_limits). */
export function tokenLimits(o, promptLen) {
  let max = 20;
  if (o.max_new_tokens != null) max = promptLen + o.max_new_tokens;
  else if (o.max_length != null) max = o.max_length;
  let min = 0;
  if (o.min_new_tokens != null) min = promptLen + o.min_new_tokens;
  else if (o.min_length != null) min = o.min_length;
  if (max <= promptLen) {
    throw new Error(`the prompt is ${promptLen} tokens; the maximum length must leave room for new tokens`);
  }
  return [min, max];
}

function bannedNgrams(seq, n) {
  const prefix = n > 1 ? seq.slice(seq.length - n + 1).join(",") : "";
  const banned = new Set();
  for (let i = 0; i + n - 1 < seq.length; i++) {
    if (seq.slice(i, i + n - 1).join(",") === prefix) banned.add(seq[i + n - 1]);
  }
  return banned;
}

/** transformers' logits processors, in its order, applied in place to one row's scores. */
export function processScores(seq, scores, offset, vocab, cur, minLen, o, eos) {
  if (o.repetition_penalty !== 1.0) {
    const p = f(o.repetition_penalty);
    for (const t of new Set(seq.slice(0, cur))) {
      const s = scores[offset + t];
      scores[offset + t] = s < 0 ? f(s * p) : f(s / p);
    }
  }
  const n = o.no_repeat_ngram_size;
  if (n && cur + 1 >= n) {
    for (const t of bannedNgrams(seq.slice(0, cur), n)) scores[offset + t] = -Infinity;
  }
  if (cur < minLen) scores[offset + eos] = -Infinity;
}

function logSoftmax(logits, offset, vocab, out) {
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (logits[offset + i] > max) max = logits[offset + i];
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const s = f(logits[offset + i] - max);
    out[offset + i] = s;
    sum += Math.exp(s);
  }
  const lse = f(Math.log(sum));
  for (let i = 0; i < vocab; i++) out[offset + i] = f(out[offset + i] - lse);
}

/** Indices of the k largest values, best first; equal values: the lower index first. */
export function topk(values, k) {
  const idx = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (idx.length === k && !(v > values[idx[k - 1]])) continue;
    let j = idx.length === k ? k - 1 : idx.length;
    while (j > 0 && v > values[idx[j - 1]]) j--;
    idx.splice(j, 0, i);
    if (idx.length > k) idx.pop();
  }
  return idx;
}

function continuation(seq, promptLen, eos) {
  const out = [];
  for (const t of seq.slice(promptLen)) {
    if (t === eos) break;
    out.push(t);
  }
  return out;
}

/** Greedy decoding of one image: the generated token ids (no eos). */
export async function greedy(start, promptIds, o, special) {
  const [minLen, maxLen] = tokenLimits(o, promptIds.length);
  const session = await start(1, maxLen);
  try {
    const seq = [...promptIds];
    let logits = await session.stepRows([seq]);
    const vocab = logits.length;
    for (;;) {
      const scores = Float32Array.from(logits);
      processScores(seq, scores, 0, vocab, seq.length, minLen, o, special.eos);
      let best = 0;
      for (let i = 1; i < vocab; i++) if (scores[i] > scores[best]) best = i;
      seq.push(best);
      if (seq.length >= maxLen || best === special.eos) break;
      logits = await session.stepRows([[best]]);
    }
    return [continuation(seq, promptIds.length, special.eos)];
  } finally {
    session.dispose();
  }
}

/** transformers' vectorized beam search (decoding.py _beam_search) for one image. */
export async function beamSearch(start, promptIds, o, special) {
  const nb = o.num_beams;
  const keep = 2 * nb;
  const p = promptIds.length;
  const lp = o.length_penalty;
  const early = o.early_stopping;
  const [minLen, maxLen] = tokenLimits(o, p);
  const session = await start(nb, maxLen);
  try {
    let running = Array.from({ length: nb }, () => [...promptIds]);
    let runningScores = Array.from({ length: nb }, (_, i) => (i === 0 ? 0 : NEG));
    let finished = running.map((s) => [...s]);
    let finishedScores = new Array(nb).fill(NEG);
    let isFinished = new Array(nb).fill(false);
    let canImprove = true;
    let cur = p;
    let logits = await session.stepRows(running.map((s) => s.slice(0, cur)));
    const vocab = logits.length / nb;
    const logProbs = new Float32Array(nb * vocab);
    for (;;) {
      for (let r = 0; r < nb; r++) {
        logSoftmax(logits, r * vocab, vocab, logProbs);
        processScores(running[r], logProbs, r * vocab, vocab, cur, minLen, o, special.eos);
        const rs = f(runningScores[r]);
        for (let i = r * vocab; i < (r + 1) * vocab; i++) logProbs[i] = f(logProbs[i] + rs);
      }
      const topIdx = topk(logProbs, keep);
      const topScores = topIdx.map((i) => logProbs[i]);
      const topBeam = topIdx.map((i) => Math.floor(i / vocab));
      const topSeqs = topIdx.map((i, k) => {
        const s = running[topBeam[k]].slice(0, cur);
        s.push(i % vocab);
        return s;
      });
      const hits = topSeqs.map((s) => s[cur] === special.eos || cur + 1 >= maxLen);

      const live = Float32Array.from(topScores, (s, k) => (hits[k] ? f(s + NEG) : s));
      const nextIdx = topk(live, nb);
      running = nextIdx.map((k) => topSeqs[k]);
      runningScores = nextIdx.map((k) => live[k]);
      const sourceRows = nextIdx.map((k) => topBeam[k]);

      const justDone = hits.map((h, k) => h && k < nb);
      const divisor = f((cur + 1 - p) ** lp);
      const allFinished = isFinished.every((x) => x);
      const done = topScores.map((s, k) => {
        let d = f(s / divisor);
        if (early === true && allFinished) d = f(d + NEG);
        if (!canImprove) d = f(d + NEG);
        if (!justDone[k]) d = f(d + NEG);
        return d;
      });
      const mergedScores = Float32Array.from([...finishedScores, ...done]);
      const best = topk(mergedScores, nb);
      const mergedSeqs = [...finished, ...topSeqs];
      const mergedDone = [...isFinished, ...justDone];
      finished = best.map((k) => mergedSeqs[k]);
      finishedScores = best.map((k) => mergedScores[k]);
      isFinished = best.map((k) => mergedDone[k]);

      cur += 1;
      const bestLen = early === "never" && lp > 0.0 ? maxLen - p : cur - p;
      const bestRunning = f(runningScores[0] / f(bestLen ** lp));
      const worst = Math.min(...finishedScores);
      canImprove = canImprove && isFinished.some((fin) => bestRunning > (fin ? worst : NEG));
      const stop = !canImprove || (early === true && isFinished.every((x) => x)) || hits.every((h) => h);
      if (stop) break;
      session.reorder(sourceRows);
      logits = await session.stepRows(running.map((s) => [s[cur - 1]]));
    }
    const k = o.num_captions || 1;
    return finished.slice(0, k).map((s) => continuation(s, p, special.eos));
  } finally {
    session.dispose();
  }
}

/** Greedy or beam search by the options (sampling is not offered in the browser). */
export function generate(start, promptIds, o, special) {
  if (o.do_sample) throw new Error("sampling is not available in the browser; use greedy or beam search");
  return o.num_beams > 1 ? beamSearch(start, promptIds, o, special) : greedy(start, promptIds, o, special);
}
