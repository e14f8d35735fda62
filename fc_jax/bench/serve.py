"""`python -m fc_jax.bench serve [--seconds=8 --switches=3 --max_streams=2 --streams=1]`: the live studio end to
end. Starts `python -m fc_jax.serve --port=0` (the shipped tiny-world student on CPU, sessions compiled before
it listens), then over its WebSocket (`fc_jax.serve.client`), per stream:

- first_frame_s: from the start message to the first frame received;
- received_fps: frames received per second after the first second (the server paces at the video's fps);
- switch_latency_ms / switch_latency_chunks: the server's measure of each switch (its arrival to the end of
  generating the first chunk with the new garment; chunk boundaries waited: 0 or 1), the worst over
  `--switches` switches; switch_to_received_ms: the worst click to the first received frame of that chunk
  (that also waits for the chunk playing and the one queued to play out);
with the goals beside them (>= 24 fps received, <= 1 chunk, first frame <= 2 s)."""

from __future__ import annotations

import asyncio
import statistics
import time

from absl import flags

from fc_jax import cli
from fc_jax.bench.common import emit
from fc_jax.serve import client

FLAGS = flags.FlagValues()
flags.DEFINE_float("seconds", 8.0, "seconds of stream per client", flag_values=FLAGS)
flags.DEFINE_integer("switches", 3, "garment switches per client, spread over the stream", flag_values=FLAGS)
flags.DEFINE_integer("streams", 1, "concurrent clients", flag_values=FLAGS)
flags.DEFINE_integer("max_streams", 2, "the server's --max_streams", flag_values=FLAGS)
flags.DEFINE_string("decoder", "vae", "the server's --decoder", flag_values=FLAGS)

GOALS = {"received_fps": ">= 24", "switch_latency_chunks": "<= 1", "first_frame_s": "<= 2"}


async def _one(url: str, person: str, seconds: float, switches: int) -> dict:
    async with client.StudioClient(url) as c:
        started = await c.start(person, "g0")
        await c.frames_until(1, timeout=30)
        first_frame = c.frames[0].at - started
        end = time.perf_counter() + seconds
        clicks = []
        for k in range(switches):
            await asyncio.sleep(max(0.0, (end - time.perf_counter()) / (switches - k + 1)))
            garment = f"g{(k + 1) % 8}"
            clicks.append((k, garment, await c.switch(garment, seq=k)))
            await c.expect("chunk", timeout=30, garment=garment)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        frames = list(c.frames)
        steady = [f for f in frames if f.at - frames[0].at >= 1.0]
        fps = (len(steady) - 1) / (steady[-1].at - steady[0].at) if len(steady) > 1 else 0.0
        chunks = [m for m in c.messages if m["type"] == "chunk" and m["switch"]]
        latency, boundaries, received = [], [], []
        for seq, garment, at in clicks:
            m = next(m for m in chunks if m["switch"]["seq"] == seq)
            latency.append(m["switch"]["latency_ms"])
            boundaries.append(m["switch"]["latency_chunks"])
            shown = next((f.at for f in frames if f.number >= m["first_frame"]), None)
            if shown is not None:
                received.append((shown - at) * 1e3)
        return {"first_frame_s": first_frame, "received_fps": fps, "frames": len(frames),
                "switch_latency_ms": latency, "switch_latency_chunks": boundaries, "switch_to_received_ms": received}


async def _bench(url: str) -> list[dict]:
    people = [f"p{i % 4}" for i in range(FLAGS.streams)]
    return await asyncio.gather(*(_one(url, p, FLAGS.seconds, FLAGS.switches) for p in people))


def main(argv: list[str] | None = None) -> None:
    cli.parse(FLAGS, "python -m fc_jax.bench serve", argv, description=__doc__.split("\n\n", 1)[0])
    if FLAGS.streams > FLAGS.max_streams:
        cli.fail("python -m fc_jax.bench serve", f"--streams={FLAGS.streams} exceeds --max_streams={FLAGS.max_streams}")
    launched = time.perf_counter()
    proc, url = client.launch([f"--max_streams={FLAGS.max_streams}", f"--decoder={FLAGS.decoder}"])
    ready_s = time.perf_counter() - launched
    try:
        runs = asyncio.run(asyncio.wait_for(_bench(url), FLAGS.seconds + 120))
    finally:
        client.stop(proc)
    allv = lambda key: [v for r in runs for v in (r[key] if isinstance(r[key], list) else [r[key]])]
    result = {
        "streams": FLAGS.streams, "decoder": FLAGS.decoder, "server_ready_s": round(ready_s, 1),
        "received_fps": round(min(allv("received_fps")), 2),
        "switch_latency_ms": round(max(allv("switch_latency_ms")), 1),
        "switch_latency_ms_median": round(statistics.median(allv("switch_latency_ms")), 1),
        "switch_latency_chunks": max(allv("switch_latency_chunks")),
        "switch_to_received_ms": round(max(allv("switch_to_received_ms")), 1),
        "first_frame_s": round(max(allv("first_frame_s")), 3),
        "frames_received": allv("frames"),
        "goals": GOALS,
    }
    result["goals_met"] = {"received_fps": result["received_fps"] >= 24 * 0.98,  # paced at 24: within 2 %
                           "switch_latency_chunks": result["switch_latency_chunks"] <= 1,
                           "first_frame_s": result["first_frame_s"] <= 2}
    emit(result)


if __name__ == "__main__":
    main()
