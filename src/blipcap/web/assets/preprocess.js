// Image preprocessing equal to blipcap's (and transformers' BlipImageProcessor, PIL path):
// Pillow's resize, re-implemented on raw RGBA pixels, then rescale and normalize in float32.
//
// Canvas smoothing is not used: Pillow resamples separably with a filter whose support
// grows with the downscale factor (antialiasing), in 22-bit fixed point with 8-bit
// rounding after each pass. The code below follows libImaging/Resample.c step by step,
// so the pixels are Pillow's exactly (same decoded input).

const PRECISION_BITS = 22; // 32 - 8 - 2, as Pillow
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);
const MAX = 2 ** (PRECISION_BITS + 8);

function bicubic(x) {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

function bilinear(x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

// Pillow's resampling filters by their enum value (Image.Resampling).
export const FILTERS = { 2: [bilinear, 1.0], 3: [bicubic, 2.0] };

// Fixed-point coefficients of one axis: Pillow's precompute_coeffs + normalize_coeffs_8bpc.
function coefficients(inSize, outSize, resample) {
  const [filter, filterSupport] = FILTERS[resample];
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filterSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const pre = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0.0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * ss);
      pre[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      if (ww !== 0.0) pre[x] /= ww;
      kk[xx * ksize + x] =
        pre[x] < 0 ? Math.trunc(-0.5 + pre[x] * ONE) : Math.trunc(0.5 + pre[x] * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  if (ss >= MAX) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / ONE);
}

function horizontalPass(src, width, height, outW, resample) {
  const { ksize, bounds, kk } = coefficients(width, outW, resample);
  const dst = new Uint8Array(outW * height * 3);
  for (let y = 0; y < height; y++) {
    const row = y * width * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const k = xx * ksize;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let x = 0; x < xmax; x++) {
        const p = row + (x + xmin) * 3;
        const c = kk[k + x];
        s0 += src[p] * c;
        s1 += src[p + 1] * c;
        s2 += src[p + 2] * c;
      }
      const o = (y * outW + xx) * 3;
      dst[o] = clip8(s0);
      dst[o + 1] = clip8(s1);
      dst[o + 2] = clip8(s2);
    }
  }
  return dst;
}

function verticalPass(src, width, height, outH, resample) {
  const { ksize, bounds, kk } = coefficients(height, outH, resample);
  const dst = new Uint8Array(width * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    const k = yy * ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * width + xx) * 3;
        const c = kk[k + y];
        s0 += src[p] * c;
        s1 += src[p + 1] * c;
        s2 += src[p + 2] * c;
      }
      const o = (yy * width + xx) * 3;
      dst[o] = clip8(s0);
      dst[o + 1] = clip8(s1);
      dst[o + 2] = clip8(s2);
    }
  }
  return dst;
}

/**
 * Resize RGBA pixels (Uint8ClampedArray, width * height * 4) to outW x outH RGB
 * (Uint8Array, outW * outH * 3) exactly as Pillow's Image.resize on an RGB image.
 *
 * Each pass rounds to 8 bits, so the order of the passes shows in the result.
 * Recent Pillow (ImagingResampleInner) runs the vertical pass first when the
 * height shrinks by more than twice as many pixels as the width;
 * `verticalFirstRule = false` gives older Pillow's order (always horizontal
 * first). `blipcap export web` probes the installed Pillow for it.
 */
export function resizeRGB(rgba, width, height, outW, outH, resample = 3, verticalFirstRule = true) {
  if (!FILTERS[resample]) {
    throw new Error(`resample filter ${resample} is not supported (bilinear 2, bicubic 3)`);
  }
  let src = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < width * height; i++, j += 3) {
    src[j] = rgba[i * 4];
    src[j + 1] = rgba[i * 4 + 1];
    src[j + 2] = rgba[i * 4 + 2];
  }
  const horizontalFirst = !(
    verticalFirstRule && height - outH > 0 && height - outH > (width - outW) * 2
  );
  // A pass whose size does not change is skipped, as Pillow does (it would be a copy).
  if (horizontalFirst) {
    if (outW !== width) src = horizontalPass(src, width, height, outW, resample);
    if (outH !== height) src = verticalPass(src, outW, height, outH, resample);
  } else {
    if (outH !== height) src = verticalPass(src, width, height, outH, resample);
    if (outW !== width) src = horizontalPass(src, width, outH, outW, resample);
  }
  return src;
}

/**
 * RGB pixels (HWC uint8) -> normalized float32 CHW, with numpy's arithmetic:
 * rescale in float64 then float32, subtract the mean and divide by the std in float32.
 */
export function normalize(rgb, width, height, { mean, std, rescale_factor: rescale }) {
  const f = Math.fround;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]);
    const s = f(std[c]);
    for (let i = 0; i < plane; i++) {
      out[c * plane + i] = f(f(f(rgb[i * 3 + c] * rescale) - m) / s);
    }
  }
  return out;
}

/** RGBA pixels of any size -> the model's (3, H, W) float32 input. */
export function preprocess(rgba, width, height, config) {
  const [outH, outW] = [config.height, config.width];
  const rgb = resizeRGB(
    rgba, width, height, outW, outH, config.resample, config.vertical_first_rule !== false,
  );
  return { rgb, pixels: normalize(rgb, outW, outH, config) };
}

/**
 * Decode an image (Blob or File) to RGBA pixels: the browser's decoder, EXIF orientation
 * applied (as blipcap does), no colour-space conversion and no alpha premultiplication.
 */
export async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
    imageOrientation: "from-image",
  });
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { data } = ctx.getImageData(0, 0, width, height);
  return { rgba: data, width, height };
}
