"""The page where the reader draws (book/draw.md), in headless Chromium, served as the
built book is, with no network: strokes drawn with the mouse get a reading, and 100 test
digits fed through the page's own path (the canvas, the JavaScript port of
prepare_digit, ONNX Runtime Web) get the image and the probabilities that
`cnn.prepare_digit` and the NumPy network (loaded from the page's own deep_cnn.npz)
give.
"""

import base64

import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cnn import load_mnist, load_model, prepare_digit

DIGITS = 100
SCALE = 10  # 28 x 28 -> the box's 280 x 280

WAIT_READY = """
const done = arguments[arguments.length - 1];
window.cnnDraw.ready.then(() => done("ready"), (e) => done(String(e)));
"""

# Each digit, grey levels (uint8) of dark ink on white, enlarged SCALE times by
# repeating pixels (np.kron), is put into the box and read as a drawing is.
READ_DIGITS = """
const [digits, scale, done] = arguments;
(async () => {
  const side = 28 * scale, results = [];
  for (const digit of digits) {
    const big = new Uint8Array(side * side);
    for (let i = 0; i < side; i++)
      for (let j = 0; j < side; j++)
        big[i * side + j] = digit[Math.floor(i / scale) * 28 + Math.floor(j / scale)];
    results.push(await window.cnnDraw.readImage(big, side, side));
  }
  return results;
})().then(done, (e) => done(String(e)));
"""


def _open(server, browser):
    browser.get(f"{server}/draw.html")
    state = browser.execute_async_script(WAIT_READY)
    assert state == "ready", f"ONNX Runtime Web did not start: {state}"


def _verdict(browser):
    return browser.find_element(By.CSS_SELECTOR, "#cnn-draw .draw-verdict").text


def test_strokes_drawn_with_the_mouse_get_a_reading(server, browser):
    _open(server, browser)
    box = browser.find_element(By.CSS_SELECTOR, "canvas.draw-box")
    assert _verdict(browser) == "Draw a digit in the box."
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    # a 1: one stroke down the middle of the box
    strokes = ActionChains(browser).move_to_element_with_offset(box, 0, -100)
    strokes.click_and_hold()
    for _ in range(10):
        strokes.move_by_offset(0, 20)
    strokes.release().perform()
    WebDriverWait(browser, 20).until(
        lambda b: _verdict(b).startswith("The network reads")
    )
    widths = browser.execute_script(
        "return [...document.querySelectorAll('#cnn-draw .draw-value')]"
        ".map(v => parseFloat(v.textContent));"
    )
    assert len(widths) == 10 and abs(sum(widths) - 100) < 1.0, widths
    seen = browser.execute_script(
        "const c = document.querySelector('canvas.draw-seen');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data);"
    )
    assert max(seen) == 255, "the 28 x 28 image the network sees is empty"
    browser.find_element(By.CSS_SELECTOR, "button.draw-clear").click()
    assert _verdict(browser) == "Draw a digit in the box."


@pytest.fixture(scope="module")
def page_model(server, browser, tmp_path_factory):
    """The NumPy network from the page's own download link (deep_cnn.npz)."""
    _open(server, browser)
    encoded = browser.execute_script(
        "return JSON.parse(document.getElementById('cnn-draw-model').textContent).npz;"
    )
    path = tmp_path_factory.mktemp("page") / "deep_cnn.npz"
    path.write_bytes(base64.b64decode(encoded))
    return load_model(path)


def test_page_reads_test_digits_as_numpy_does(server, browser, page_model, capsys):
    (_, _), (X_test, y_test) = load_mnist()
    paper = 255 - X_test[:DIGITS]  # dark ink on white, as the box draws
    _open(server, browser)
    browser.set_script_timeout(300)
    results = browser.execute_async_script(
        READ_DIGITS, paper.reshape(DIGITS, -1).tolist(), SCALE
    )
    assert isinstance(results, list), results
    page_images = np.array([r["image"] for r in results]).reshape(DIGITS, 1, 28, 28)
    page_probs = np.array([r["probabilities"] for r in results])
    ones = np.ones((SCALE, SCALE), dtype=np.uint8)
    images = np.stack([prepare_digit(np.kron(digit, ones)) for digit in paper])
    probs = page_model.predict_proba(images)
    image_diff = float(np.abs(page_images - images).max())
    prob_diff = float(np.abs(page_probs - probs).max())
    same = int((page_probs.argmax(axis=1) == probs.argmax(axis=1)).sum())
    right = int((page_probs.argmax(axis=1) == y_test[:DIGITS]).sum())
    with capsys.disabled():
        print(
            f"\ndrawing page, {DIGITS} test digits: same digit as NumPy for {same}, "
            f"right for {right}; largest difference of the 28 x 28 image "
            f"{image_diff:.1e}, of the probabilities {prob_diff:.1e}"
        )
    assert image_diff <= 1e-6, "the page's preparation differs from prepare_digit"
    assert same == DIGITS, f"the page reads {DIGITS - same} digits differently"
    assert prob_diff <= 1e-4
