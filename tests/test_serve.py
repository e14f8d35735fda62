"""The live studio's server (`fc_jax.serve`), no browser: one real server per module on 127.0.0.1 at a free port,
two streams at most, spoken to with aiohttp's WebSocket client (`fc_jax.serve.client`).

What a stream shows is checked on the pixels against a solo run of the same person, garment and prompt (the
streams are deterministic: same seed, same inputs, same frames): a concurrent stream gives exactly the solo
frames (independent), another garment gives other frames, and after a switch the frames leave the solo run's at
exactly the chunk the server says shows the new garment. (The shipped tiny-world student paints the
garment's colour on few of its pixels, its card's garment/colour is 0.14, so the palette measure
`gallery.garment_colour` cannot reliably name the garment; the counterfactual comparison tells the garments apart
whatever the model draws.)
"""

import asyncio
import struct

import aiohttp
import numpy as np
import pytest

from fc_jax.serve import client

FRAMES = 33  # 9 + 12 + 12: three chunks


@pytest.fixture(scope="module")
def server():
    proc, url = client.launch(["--max_streams=2", "--warm_switches=default",
                               "--edit=fc_jax.kv_edits:reference_only_refresh"])
    yield url
    client.stop(proc)


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def idle(url, timeout=30):
    """Wait until no stream runs (a closed tab's slot comes back once its thread is out, within a chunk)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(int(timeout / 0.1)):
            async with http.get(f"{url}api/info") as r:
                if (await r.json())["running"] == 0:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"streams still running after {timeout}s")


@pytest.fixture(autouse=True)
def _idle_before(request):
    if "server" in request.fixturenames:
        run(idle(request.getfixturevalue("server")))


def pixels(frames):
    return np.stack([f.pixels() for f in frames]).astype(np.int16)


async def _stream(url, garment, frames=FRAMES, switch_at=None, switch_to=None):
    async with client.StudioClient(url) as c:
        await c.start("p0", garment)
        if switch_at is not None:
            await c.frames_until(switch_at)
            await c.switch(switch_to, seq=1)
        await c.frames_until(frames)
        return c.frames[:frames], list(c.messages)


@pytest.fixture(scope="module")
def solo(server):
    """The frames of one stream alone: person p0 in garment g0, no switch."""
    frames, _ = run(_stream(server, "g0", frames=57))
    return pixels(frames)


def test_concurrent_streams_are_independent_and_the_limit_holds(server, solo):
    async def body():
        await idle(server)
        async with client.StudioClient(server) as a, client.StudioClient(server) as b:
            await a.start("p0", "g0")
            await b.start("p0", "g5")
            await a.expect("status", state="started")
            await b.expect("status", state="started")
            async with client.StudioClient(server) as c:  # a third tab while two stream: busy, refused
                await c.start("p0", "g1")
                busy = await c.expect("busy")
                assert "busy: 2 streams running" in busy["message"] and "try again" in busy["message"]
                assert not c.frames
            await a.frames_until(FRAMES)
            await b.frames_until(FRAMES)
            return a.frames[:FRAMES], b.frames[:FRAMES]

    fa, fb = run(body())
    pa, pb = pixels(fa), pixels(fb)
    assert [f.number for f in fa] == list(range(FRAMES))
    np.testing.assert_array_equal(pa, solo[:FRAMES])  # exactly the solo stream: nothing leaked from the other
    assert np.abs(pa - pb)[9:].mean() > 0.5  # another garment, other frames


def test_a_closed_tab_frees_its_slot(server):
    async def body():
        a = client.StudioClient(server)
        await a.__aenter__()
        b = client.StudioClient(server)
        await b.__aenter__()
        await a.start("p0", "g0")
        await b.start("p1", "g2")
        await a.frames_until(3)
        await b.frames_until(3)
        await a.__aexit__(None, None, None)  # mid-stream: the tab goes away
        async with client.StudioClient(server) as c:
            for _ in range(20):  # the slot comes back within a chunk or so
                before = len(c.messages)
                await c.start("p2", "g3")
                await c.wait_for(lambda: any(m["type"] in ("busy", "status") and m.get("state") != "stopped"
                                             for m in c.messages[before:]), 20, "a reply to start")
                if c.message("status", state="started"):
                    break
                await asyncio.sleep(0.25)
            await c.frames_until(12, timeout=30)
        await b.__aexit__(None, None, None)

    run(body())


def test_bad_messages_get_errors_and_the_stream_goes_on(server):
    async def body():
        async with client.StudioClient(server) as c:
            await c.switch("g1")  # before start
            err = await c.expect("error", about="switch")
            assert "before start" in err["message"]
            await c.start("p0", "g0")
            await c.frames_until(12)
            for bad in ("{not json", "[1, 2]", {"type": "dance"}, {"type": "switch", "garment": "nope"},
                        {"type": "switch", "garment": "g2", "options": {"refresh": "yes"}},
                        {"type": "options", "teleport": True}):
                await c.send(bad)
            await c.wait_for(lambda: sum(m["type"] == "error" for m in c.messages) >= 7, 10, "seven errors")
            errors = [m["message"] for m in c.messages if m["type"] == "error"]
            assert any("not JSON" in e for e in errors) and any("unknown message type 'dance'" in e for e in errors)
            assert any("unknown garment 'nope'" in e for e in errors)
            assert any("options must map" in e for e in errors)
            n = len(c.frames)
            await c.frames_until(n + 24, timeout=20)  # still streaming
            await c.send(struct.pack(">I", 7).decode("latin-1"))  # a stray control character string
            await c.send({"type": "stop"})
            await c.expect("status", state="stopped")

    run(body())


def test_uploads_are_checked(server):
    from PIL import Image
    import io

    def png(w, h):
        buffer = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 40)).save(buffer, format="PNG")
        return buffer.getvalue()

    async def body():
        async with aiohttp.ClientSession() as http:
            async def post(data, kind="garment"):
                async with http.post(f"{server}api/upload?kind={kind}", data=data) as r:
                    return r.status, await r.json()

            status, body = await post(b"this is not an image")
            assert status == 415 and "not a readable image" in body["error"]
            status, body = await post(b"\0" * (9 * 2**20))
            assert status == 413 and "too large" in body["error"] and "8 MiB" in body["error"]
            status, body = await post(png(8, 8))
            assert status == 400 and "at least 32x32" in body["error"]
            status, body = await post(png(64, 80), kind="shoe")
            assert status == 400
            status, body = await post(png(64, 80))
            assert status == 200 and body["id"].startswith("u") and body["url"] == f"/uploads/{body['id']}.png"
            async with http.get(f"{server}uploads/{body['id']}.png") as r:
                assert r.status == 200
            async with http.get(f"{server}uploads/..%2Fetc%2Fpasswd.png") as r:
                assert r.status == 404
            return body["id"]

    uploaded = run(body())

    async def stream():
        async with client.StudioClient(server) as c:  # an uploaded garment streams and switches like a built-in
            await c.start("p0", uploaded)
            await c.frames_until(9)
            await c.switch("g1")
            await c.expect("chunk", garment="g1")

    run(stream())


def test_switch_lands_at_the_reported_chunk_and_clicks_coalesce(server, solo):
    async def body():
        await idle(server)
        async with client.StudioClient(server) as c:
            await c.start("p0", "g0")
            await c.frames_until(14)
            for seq, garment in enumerate(("g1", "g2", "g3", "g4", "g5")):  # a flood of clicks
                await c.switch(garment, seq=seq)
            chunk = await c.expect("chunk", garment="g5")
            await c.frames_until(chunk["first_frame"] + 24)
            async with aiohttp.ClientSession() as http:
                url = c.message("status", state="started")["recording"]
                async with http.get(server.rstrip("/") + url) as r:
                    assert r.status == 200 and r.content_type == "video/mp4"
                    mp4 = await r.read()
            return chunk, c.frames, c.messages, mp4

    chunk, frames, messages, mp4 = run(body())
    applied = [m for m in messages if m["type"] == "chunk" and m["switch"]]
    assert applied[-1]["switch"]["garment"] == "g5" and applied[-1]["switch"]["seq"] == 4
    assert all(m["garment"] in ("g0", "g5") or m["switch"] for m in messages if m["type"] == "chunk")
    assert chunk["switch"]["latency_chunks"] <= 1
    first = chunk["first_frame"]
    got = pixels(frames[:first + 12])
    n = min(len(got), len(solo))
    np.testing.assert_array_equal(got[:first], solo[:first])  # the old garment up to the boundary
    assert np.abs(got[first:n] - solo[first:n]).mean() > 0.5  # the new one from the reported chunk on
    assert mp4[4:8] == b"ftyp" and len(mp4) > 1000


def test_the_page_and_gallery_are_served(server):
    async def body():
        async with aiohttp.ClientSession() as http:
            async with http.get(server) as r:
                assert r.status == 200 and "live studio" in await r.text()
            async with http.get(f"{server}api/info") as r:
                info = await r.json()
            assert len(info["people"]) >= 3 and len(info["garments"]) >= 6 and info["fps"] == 24
            assert len({g["colour"] for g in info["garments"]}) == len(info["garments"])
            async with http.get(server + info["garments"][0]["url"].lstrip("/")) as r:
                assert r.status == 200 and r.content_type == "image/png"
            async with http.get(f"{server}static/studio.js") as r:
                assert r.status == 200
            async with http.get(f"{server}recordings/nope.mp4") as r:
                assert r.status == 404

    run(body())


def test_a_switch_can_run_the_plug_in_edit(server, solo):
    async def switched(**options):
        async with client.StudioClient(server) as c:
            await c.start("p0", "g0")
            await c.frames_until(14)
            await c.switch("g5", seq=1, **options)
            chunk = await c.expect("chunk", garment="g5")
            await c.frames_until(chunk["first_frame"] + 12)
            return chunk, pixels(c.frames[:chunk["first_frame"] + 12])

    async def body():
        await idle(server)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server}api/info") as r:
                assert (await r.json())["edit"] == "fc_jax.kv_edits:reference_only_refresh"
        plug_in = await switched(edit=True)
        await idle(server)
        return plug_in, await switched(edit=False)

    (edit_chunk, by_edit), (builtin_chunk, by_builtin) = run(body())
    assert edit_chunk["switch"]["options"]["edit"] is True and builtin_chunk["switch"]["options"]["edit"] is False
    first = max(edit_chunk["first_frame"], builtin_chunk["first_frame"])
    n = min(len(by_edit), len(by_builtin))
    np.testing.assert_array_equal(by_edit[:min(edit_chunk["first_frame"], builtin_chunk["first_frame"])],
                                  solo[:min(edit_chunk["first_frame"], builtin_chunk["first_frame"])])
    # the reference-only refresh keeps the old garment and the history: other frames than the built-in switch
    assert np.abs(by_edit[first:n] - by_builtin[first:n]).mean() > 0.5
