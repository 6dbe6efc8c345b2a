// BLIP's BERT WordPiece tokenizer: prompt encoding and caption detokenizing, equal to
// blipcap's Tokenizer (the `tokenizers` library's BertNormalizer, BertPreTokenizer,
// WordPiece model and decoder, then blipcap's clean-ups).

// The `tokenizers` WordPiece decoder's per-token clean-up (cleanup: true).
const DECODER_CLEANUPS = [
  [" .", "."], [" ?", "?"], [" !", "!"], [" ,", ","], [" ' ", "'"], [" n't", "n't"],
  [" 'm", "'m"], [" do not", " don't"], [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"],
];
// blipcap's clean-ups of the joined text (blipcap.model.processing._CLEANUPS).
const TEXT_CLEANUPS = [
  [" .", "."], [" ?", "?"], [" !", "!"], [" ,", ","], [" ' ", "'"],
  [" n't", "n't"], [" 'm", "'m"], [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"],
];

function replaceAll(text, pairs) {
  for (const [a, b] of pairs) text = text.split(a).join(b);
  return text;
}

function isPunctuation(ch) {
  const cp = ch.codePointAt(0);
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
    return true;
  }
  return /\p{P}/u.test(ch);
}

function isChinese(cp) {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

export class Tokenizer {
  /** vocab: token strings by id; config: the bundle's "tokenizer" section. */
  constructor(vocab, config) {
    this.vocab = vocab;
    this.ids = new Map(vocab.map((t, i) => [t, i]));
    this.skip = new Set(config.skip_ids);
    this.bos = config.bos_token_id;
    this.unk = config.unk_token_id;
    this.lowercase = config.lowercase;
    this.prefix = config.continuing_subword_prefix;
    this.maxChars = config.max_input_chars_per_word;
  }

  normalize(text) {
    let out = "";
    for (const ch of text) {
      const cp = ch.codePointAt(0);
      if (cp === 0 || cp === 0xfffd) continue;
      if (/\s/u.test(ch)) { out += " "; continue; }
      if (/[\p{Cc}\p{Cf}]/u.test(ch)) continue;
      out += isChinese(cp) ? ` ${ch} ` : ch;
    }
    if (this.lowercase) {
      out = out.toLowerCase().normalize("NFD").replace(/\p{Mn}/gu, "");
    }
    return out;
  }

  words(text) {
    const words = [];
    for (const chunk of this.normalize(text).split(/\s+/u)) {
      let word = "";
      for (const ch of chunk) {
        if (isPunctuation(ch)) {
          if (word) words.push(word);
          words.push(ch);
          word = "";
        } else {
          word += ch;
        }
      }
      if (word) words.push(word);
    }
    return words;
  }

  /** Text -> WordPiece ids (no special tokens). */
  encode(text) {
    const ids = [];
    for (const word of this.words(text)) {
      const chars = Array.from(word);
      if (chars.length > this.maxChars) { ids.push(this.unk); continue; }
      const pieces = [];
      let start = 0;
      let bad = false;
      while (start < chars.length) {
        let end = chars.length;
        let found = null;
        while (start < end) {
          let piece = chars.slice(start, end).join("");
          if (start > 0) piece = this.prefix + piece;
          if (this.ids.has(piece)) { found = this.ids.get(piece); break; }
          end--;
        }
        if (found === null) { bad = true; break; }
        pieces.push(found);
        start = end;
      }
      if (bad) ids.push(this.unk); else ids.push(...pieces);
    }
    return ids;
  }

  /** `[DEC]` followed by the prompt's tokens, as blipcap feeds the decoder. */
  promptIds(prompt) {
    return prompt ? [this.bos, ...this.encode(prompt)] : [this.bos];
  }

  /** Token ids -> text: special tokens dropped, WordPiece pieces joined, spaces cleaned up. */
  decode(ids) {
    const tokens = ids.filter((i) => !this.skip.has(i)).map((i) => this.vocab[i]);
    let text = "";
    tokens.forEach((token, i) => {
      if (i !== 0) {
        token = token.startsWith(this.prefix) ? token.slice(this.prefix.length) : ` ${token}`;
      }
      text += replaceAll(token, DECODER_CLEANUPS);
    });
    return replaceAll(text, TEXT_CLEANUPS).replace(/\s+/gu, " ").trim();
  }

  /** The text that `ids` add after `prefixIds` (a prompt); see Tokenizer.decode_continuation. */
  decodeContinuation(prefixIds, ids) {
    const prefix = this.decode(prefixIds);
    const full = this.decode([...prefixIds, ...ids]);
    if (prefix && full.startsWith(prefix)) return full.slice(prefix.length).trim();
    return this.decode(ids);
  }
}

// blipcap.text.clean_caption: known BLIP artifacts ("arafed") and decoding loops removed.
const ARTIFACT = /\b(?:ar+af+(?:e|ed|ly|y)?|ar+af+ed)\b/i;
const ARTIFACT_WORD = /^(?:ar+af+(?:e|ed|ly|y)?|ar+af+ed)$/i;
const REPEAT = /\b(\w+)(?:\s+\1\b){2,}/gi;
const DETERMINERS = new Set(
  ("a an the this that these those some two three four five six seven eight nine ten " +
    "many several few his her their its my our your one").split(" "),
);

function looksPlural(word) {
  const w = word.toLowerCase();
  const irregular = new Set(["men", "women", "people", "children", "mice", "geese", "teeth", "feet"]);
  return irregular.has(w) || (w.length > 3 && w.endsWith("s") && !/(ss|us|is)$/.test(w));
}

export function cleanCaption(text) {
  if (!ARTIFACT.test(text) && !new RegExp(REPEAT.source, "i").test(text)) return text;
  text = text.replace(REPEAT, "$1");
  const words = text.split(/\s+/u).filter((w) => w);
  const out = [];
  words.forEach((word, i) => {
    if (!ARTIFACT_WORD.test(word)) { out.push(word); return; }
    const previous = out.length ? out[out.length - 1].toLowerCase() : "";
    const following = i + 1 < words.length ? words[i + 1] : "";
    if (DETERMINERS.has(previous) || !following || looksPlural(following)) return;
    if (ARTIFACT_WORD.test(following)) return;
    out.push("aeiou".includes(following[0].toLowerCase()) ? "an" : "a");
  });
  return out.join(" ");
}
