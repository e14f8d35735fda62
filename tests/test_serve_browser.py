"""The live studio in a real headless Chromium (selenium + chromedriver, Debian's `chromium` and
`chromium-driver`): open the page, start a stream, see frames arrive, click another garment and see the drawn
frames change to it at the chunk the server reports while frames keep coming, upload a bad file and see the
message with the stream alive.

The canvas's pixels are read through JS and compared with a solo stream of the same person, garment and prompt
fetched over the WebSocket first (streams are deterministic): the same frames before the switch, others after
(the shipped student paints too few garment pixels in the garment's colour to name it, see tests/test_serve.py). With
FC_JAX_STUDIO_SCREENSHOT=PATH the page is also saved as a PNG there after the switch (docs/studio.png).
"""

import asyncio
import base64
import io
import os
import shutil
import time

import numpy as np
import pytest

from fc_jax.serve import client

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver (Debian: apt-get "
                                "install chromium chromium-driver)")


@pytest.fixture(scope="module")
def server():
    proc, url = client.launch(["--max_streams=2", "--warm_switches=default"])
    yield url
    client.stop(proc)


@pytest.fixture(scope="module")
def solo(server):
    async def body():
        async with client.StudioClient(server) as c:
            await c.start("p0", "g0")
            await c.frames_until(240, timeout=60)
            return [f.pixels() for f in c.frames[:240]]

    frames = asyncio.run(asyncio.wait_for(body(), 90))
    time.sleep(1.0)  # its slot comes back
    return np.stack(frames).astype(np.int16)


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--proxy-server=direct://", "--proxy-bypass-list=*"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, script, timeout=30.0, what="a condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} ({script})")


def canvas(driver):
    """(frame number drawn, its pixels int16 [H, W, 3]) read from the page's canvas."""
    from PIL import Image

    number, url = driver.execute_script(
        "const c = document.getElementById('video'); return [window.studio.lastFrame, c.toDataURL('image/png')];")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as img:
        return number, np.asarray(img.convert("RGB")).astype(np.int16)


def test_the_page_streams_switches_and_survives_a_bad_upload(server, solo, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait(browser, "return window.studio && window.studio.info && document.getElementById('state').textContent "
                  "=== 'ready'", what="the page to connect")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#garments button")) >= 6
    browser.find_element(By.ID, "start").click()
    wait(browser, "return window.studio.framesDrawn >= 30", what="30 frames drawn")

    before = []
    while len(before) < 3:  # frames of the first garment, as the solo stream drew them
        number, px = canvas(browser)
        if number < 150 and (not before or number != before[-1][0]):
            before.append((number, px))
        time.sleep(0.15)
    pre = [np.abs(px - solo[n]).mean() for n, px in before]

    browser.find_element(By.CSS_SELECTOR, "#garments button[data-id='g5']").click()
    wait(browser, "return window.studio.garmentShown === 'g5'", what="the switched garment on screen")
    first = browser.execute_script("for (const [k, s] of Object.entries(window.studio.chunkSwitch)) "
                                   "if (s.garment === 'g5') return Number(k); return null;")
    assert first is not None
    after = []
    while len(after) < 3:
        number, px = canvas(browser)
        if number < len(solo) and (not after or number != after[-1][0]):
            after.append((number, px))
        time.sleep(0.15)
    post = [np.abs(px - solo[n]).mean() for n, px in after]
    assert max(pre) < 0.3, pre  # the first garment: the solo stream's frames (up to the JPEG decoders)
    assert min(post) > 0.5 and min(post) > 3 * max(pre), (pre, post)  # the new garment: other frames
    latency = browser.find_element(By.ID, "switch-latency").text
    assert " ms, " in latency and "chunk" in latency
    fps = float(browser.find_element(By.ID, "fps").text)
    assert 5 <= fps <= 30, fps  # paced at 24 (the bench checks the rate; a loaded CI machine may lag)

    if os.environ.get("FC_JAX_STUDIO_SCREENSHOT"):
        time.sleep(1.0)
        browser.save_screenshot(os.environ["FC_JAX_STUDIO_SCREENSHOT"])

    bad = tmp_path / "shirt.png"
    bad.write_bytes(b"certainly not a PNG")
    drawn = browser.execute_script("return window.studio.framesDrawn")
    browser.find_element(By.ID, "upload-garment").send_keys(str(bad))
    wait(browser, "return document.getElementById('messages').textContent.includes('upload failed: not a "
                  "readable image')", what="the upload error shown")
    wait(browser, f"return window.studio.framesDrawn >= {drawn + 24}", what="frames after the bad upload")
    assert browser.find_element(By.ID, "state").text == "streaming"
