// The page where the reader draws (book/draw.md): a digit drawn in the box is prepared as
// MNIST's digits were, exactly as cnn.prepare_digit (cnn/digits.py) does it, step for step,
// and read by the network this build trained (deep_cnn, exported to ONNX by the chapter
// "A deeper network past 99.3%"), run in the page by ONNX Runtime Web.
//
// window.cnnDraw exposes the steps to the book's browser checks (tests_book/test_draw.py),
// which feed test digits through the same path as a drawing and compare with NumPy.
"use strict";

(() => {
  // ---- prepare_digit, ported: the constants and steps of cnn/digits.py ----------------
  const BOX = 20, SIZE = 28, CENTRE = 14.0;
  const INK_THRESHOLD = 0.25, NOISE_THRESHOLD = 6.0, MIN_CONTRAST = 0.1, MIN_PAPER = 0.1;
  const LUMA = [0.299, 0.587, 0.114];

  class NoDigit extends Error {}

  // An H x W image of float64 values, row by row.
  const image = (H, W, data) => ({ H, W, data: data || new Float64Array(H * W) });

  function median(values) {
    const a = Float64Array.from(values).sort();
    const n = a.length, h = n >> 1;
    return n % 2 ? a[h] : (a[h - 1] + a[h]) / 2;
  }

  // Step 2: alpha composited on white paper, then luma. rgba: uint8, 4 per pixel.
  function toGrey(rgba, H, W) {
    const g = image(H, W);
    const [r, gr, b] = LUMA;
    const onWhite = (value, a) => a * (value / 255) + (1.0 - a);
    for (let p = 0; p < H * W; p++) {
      const a = rgba[4 * p + 3] / 255;
      g.data[p] =
        r * onWhite(rgba[4 * p], a) + gr * onWhite(rgba[4 * p + 1], a) + b * onWhite(rgba[4 * p + 2], a);
    }
    return g;
  }

  const row = (x, i) => Array.from(x.data.subarray(i * x.W, (i + 1) * x.W));
  const col = (x, j, from = 0, to = x.H) => {
    const out = [];
    for (let i = from; i < to; i++) out.push(x.data[i * x.W + j]);
    return out;
  };
  // The first and last row and column, each pixel once.
  const border = (x) => [
    ...row(x, 0), ...row(x, x.H - 1), ...col(x, 0, 1, x.H - 1), ...col(x, x.W - 1, 1, x.H - 1),
  ];

  // Step 3: is the ink darker than the paper?
  function inkIsDark(grey) {
    let lo = Infinity, hi = -Infinity;
    for (const v of grey.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    return median(border(grey)) > (lo + hi) / 2;
  }

  // Step 4: the paper's level, a plane through the medians of the four sides.
  function background(x) {
    const { H, W } = x;
    const m = median(border(x));
    const top = median(row(x, 0)), bottom = median(row(x, H - 1));
    const left = median(col(x, 0)), right = median(col(x, W - 1));
    const B = image(H, W);
    for (let i = 0; i < H; i++) {
      const v = i / (H - 1);
      for (let j = 0; j < W; j++) {
        const u = j / (W - 1);
        B.data[i * W + j] = m + (bottom - top) * (v - 0.5) + (right - left) * (u - 0.5);
      }
    }
    return B;
  }

  function abovePaper(x, inverted) {
    const B = background(x);
    const d = image(x.H, x.W);
    for (let p = 0; p < d.data.length; p++) {
      d.data[p] = x.data[p] - B.data[p];
      if (inverted) d.data[p] /= Math.max(1.0 - B.data[p], MIN_PAPER);
    }
    return d;
  }

  // Step 5: the ink alone.
  function noiseLevel(d) {
    const r = border(d);
    const mr = median(r);
    return 1.4826 * median(r.map((v) => Math.abs(v - mr)));
  }

  function ink(d) {
    let contrast = 0;
    for (const v of d.data) contrast = Math.max(contrast, Math.max(v, 0));
    if (contrast < MIN_CONTRAST) throw new NoDigit("nothing stands out from the paper");
    const threshold = Math.max(INK_THRESHOLD * contrast, NOISE_THRESHOLD * noiseLevel(d));
    if (threshold >= contrast) throw new NoDigit("nothing stands out from the noise");
    const z = image(d.H, d.W);
    for (let p = 0; p < z.data.length; p++) {
      z.data[p] = Math.max(Math.max(d.data[p], 0.0) - threshold, 0.0);
    }
    return z;
  }

  // Step 6: crop to the ink.
  function crop(z) {
    let top = z.H, bottom = -1, left = z.W, right = -1;
    for (let i = 0; i < z.H; i++) {
      for (let j = 0; j < z.W; j++) {
        if (z.data[i * z.W + j] > 0) {
          top = Math.min(top, i); bottom = Math.max(bottom, i);
          left = Math.min(left, j); right = Math.max(right, j);
        }
      }
    }
    const c = image(bottom - top + 1, right - left + 1);
    for (let i = 0; i < c.H; i++) {
      for (let j = 0; j < c.W; j++) c.data[i * c.W + j] = z.data[(top + i) * z.W + left + j];
    }
    return c;
  }

  // Step 7: scale to fit 20 x 20 by area averaging.
  function fitBox(h, w) {
    const long = Math.max(h, w);
    const side = (n) => Math.max(1, Math.floor((2 * BOX * n + long) / (2 * long)));
    return [side(h), side(w)];
  }

  function areaWeights(n, m) { // (m, n), rows summing to 1
    const R = Array.from({ length: m }, () => new Float64Array(n));
    for (let i = 0; i < m; i++) {
      const a = (i * n) / m, b = ((i + 1) * n) / m;
      for (let k = 0; k < n; k++) {
        const overlap = Math.min(b, k + 1.0) - Math.max(a, k);
        R[i][k] = Math.max(overlap, 0.0) * (m / n);
      }
    }
    return R;
  }

  function areaResize(z, oh, ow) { // Ry @ z @ Rx.T
    const Ry = areaWeights(z.H, oh), Rx = areaWeights(z.W, ow);
    const t = image(oh, z.W);
    for (let i = 0; i < oh; i++) {
      for (let k = 0; k < z.H; k++) {
        const w = Ry[i][k];
        if (w === 0) continue;
        for (let j = 0; j < z.W; j++) t.data[i * z.W + j] += w * z.data[k * z.W + j];
      }
    }
    const v = image(oh, ow);
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        let s = 0;
        for (let k = 0; k < z.W; k++) s += t.data[i * z.W + k] * Rx[j][k];
        v.data[i * ow + j] = s;
      }
    }
    return v;
  }

  // Step 8: centre of mass to pixel (14, 14); step 9: the brightest pixel becomes 1.
  function place(v) {
    let total = 0, sy = 0, sx = 0;
    for (let i = 0; i < v.H; i++) {
      for (let j = 0; j < v.W; j++) {
        const a = v.data[i * v.W + j];
        total += a; sy += i * a; sx += j * a;
      }
    }
    const cy = sy / total, cx = sx / total;
    const top = Math.min(Math.max(Math.floor(CENTRE - cy + 0.5 + 1e-9), 0), SIZE - v.H);
    const left = Math.min(Math.max(Math.floor(CENTRE - cx + 0.5 + 1e-9), 0), SIZE - v.W);
    const out = new Float64Array(SIZE * SIZE);
    for (let i = 0; i < v.H; i++) {
      for (let j = 0; j < v.W; j++) out[(top + i) * SIZE + left + j] = v.data[i * v.W + j];
    }
    let hi = 0;
    for (const a of out) hi = Math.max(hi, a);
    return Float32Array.from(out, (a) => a / hi);
  }

  // Steps 2 to 9: RGBA pixels (uint8) of an H x W image -> 28 x 28 floats in [0, 1].
  function prepareDigit(rgba, H, W) {
    const grey = toGrey(rgba, H, W);
    let lo = Infinity, hi = -Infinity;
    for (const v of grey.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo === hi) throw new NoDigit("the image is all one colour");
    const inverted = inkIsDark(grey);
    const x = inverted ? image(H, W, grey.data.map((v) => 1.0 - v)) : grey;
    const z = crop(ink(abovePaper(x, inverted)));
    const [oh, ow] = fitBox(z.H, z.W);
    return place(areaResize(z, oh, ow));
  }

  // ---- the network: deep_cnn as ONNX, run by ONNX Runtime Web ---------------------------
  function bytes(base64) {
    const text = atob(base64);
    return Uint8Array.from(text, (c) => c.charCodeAt(0));
  }

  const embedded = () => JSON.parse(document.getElementById("cnn-draw-model").textContent);

  let session = null; // started once the page (and the embedded network) is there

  async function startSession() {
    ort.env.wasm.numThreads = 1; // no cross-origin isolation needed
    ort.env.wasm.wasmPaths = new URL(window.CNN_ORT_BASE, document.baseURI).href;
    return ort.InferenceSession.create(bytes(embedded().onnx));
  }

  async function predict(x) { // x: Float32Array of 784 -> Float32Array of 10
    const s = await session;
    const feeds = { images: new ort.Tensor("float32", x, [1, 1, SIZE, SIZE]) };
    const out = await s.run(feeds, ["probabilities"]);
    return out.probabilities.data;
  }

  // ---- the page ---------------------------------------------------------------------------
  function setUp() {
    const root = document.getElementById("cnn-draw");
    if (!root) return;
    const canvas = root.querySelector("canvas.draw-box");
    const seen = root.querySelector("canvas.draw-seen");
    const bars = root.querySelector(".draw-bars");
    const verdict = root.querySelector(".draw-verdict");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const pen = Math.round(canvas.width / 12); // MNIST-like strokes once scaled to 20 px
    session = startSession();

    for (let d = 0; d < 10; d++) {
      bars.insertAdjacentHTML(
        "beforeend",
        `<div class="draw-bar"><span class="draw-digit">${d}</span>` +
          `<span class="draw-track"><span class="draw-fill"></span></span>` +
          `<span class="draw-value"></span></div>`,
      );
    }

    function clear() {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      show(null, null, "Draw a digit in the box.");
    }

    function show(x, probabilities, message) {
      const s = seen.getContext("2d");
      const pixels = s.createImageData(SIZE, SIZE);
      for (let p = 0; p < SIZE * SIZE; p++) {
        const level = x ? Math.round(255 * x[p]) : 0;
        pixels.data.set([level, level, level, 255], 4 * p);
      }
      s.putImageData(pixels, 0, 0);
      bars.querySelectorAll(".draw-bar").forEach((bar, d) => {
        const p = probabilities ? probabilities[d] : 0;
        bar.querySelector(".draw-fill").style.width = `${(100 * p).toFixed(1)}%`;
        bar.querySelector(".draw-value").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "";
        bar.classList.toggle("draw-best", !!probabilities && p === Math.max(...probabilities));
      });
      verdict.textContent = message;
    }

    // The drawing as the network sees it, and its ten probabilities.
    let busy = null;
    async function update() {
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      let x;
      try {
        x = prepareDigit(data, canvas.height, canvas.width);
      } catch (error) {
        if (!(error instanceof NoDigit)) throw error;
        show(null, null, "Draw a digit in the box.");
        return null;
      }
      const probabilities = await predict(x);
      let best = 0;
      probabilities.forEach((p, d) => { if (p > probabilities[best]) best = d; });
      show(x, probabilities, `The network reads ${best} (${(100 * probabilities[best]).toFixed(1)}%).`);
      return { image: Array.from(x), probabilities: Array.from(probabilities), digit: best };
    }
    function scheduleUpdate() {
      if (!busy) busy = requestAnimationFrame(() => { busy = null; update(); });
    }

    // Mouse, pen and finger.
    let last = null;
    const at = (e) => {
      const r = canvas.getBoundingClientRect();
      return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
    };
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      last = at(e);
      ctx.fillStyle = "#000";
      ctx.beginPath();
      ctx.arc(last[0], last[1], pen / 2, 0, 2 * Math.PI);
      ctx.fill();
      scheduleUpdate();
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!last) return;
      const now = at(e);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = pen;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(...last);
      ctx.lineTo(...now);
      ctx.stroke();
      last = now;
      scheduleUpdate();
    });
    const end = () => { last = null; scheduleUpdate(); };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    root.querySelector("button.draw-clear").addEventListener("click", clear);

    // The trained network, to download: the package's own file, and the ONNX one.
    const files = embedded();
    for (const [name, key, type] of [["deep_cnn.npz", "npz", "application/octet-stream"], ["deep_cnn.onnx", "onnx", "application/octet-stream"]]) {
      const link = root.querySelector(`a.draw-download-${key}`);
      link.href = URL.createObjectURL(new Blob([bytes(files[key])], { type }));
      link.download = name;
    }

    clear();
    session.then(
      () => root.classList.add("draw-ready"),
      (error) => {
        verdict.textContent = location.protocol === "file:"
          // Browsers load WebAssembly modules over HTTP only, never from a file.
          ? "The network runs when the book is served, even offline: " +
            "python -m http.server -d _build/html, then open http://localhost:8000/draw.html"
          : `ONNX Runtime could not start: ${error}`;
      },
    );

    // For the browser checks: put a grey image (uint8, H x W, dark ink on white) into the
    // box and read it through the same path as a drawing.
    window.cnnDraw = {
      prepareDigit,
      predict,
      ready: session.then(() => true),
      async readImage(grey, H, W) {
        const pixels = ctx.createImageData(W, H);
        for (let p = 0; p < H * W; p++) pixels.data.set([grey[p], grey[p], grey[p], 255], 4 * p);
        ctx.putImageData(pixels, 0, 0);
        return update();
      },
      clear,
    };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
