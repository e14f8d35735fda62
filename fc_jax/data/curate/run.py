"""The curation run: each stage over the items the manifest says are waiting for it, with a thread pool of the
stage's `workers`, a progress bar per stage, and one manifest row per finished item. Outcomes of a job:
a check failed or a server refused (malformed VLM JSON, an edit refused or without an image) -> `rejected`;
a server unreachable after its retries or an unreadable file -> `error` (tried again next run)."""

from __future__ import annotations

import concurrent.futures
import glob
import os
import time

import numpy as np
from PIL import Image

from fc_jax.data.curate import captioning, filtering, tryoff, tryon
from fc_jax.data.curate.ask import AnswerError
from fc_jax.data.curate.edit_backend import EditError, HTTPEditBackend
from fc_jax.data.curate.manifest import Manifest
from fc_jax.data.curate.summary import summarize
from fc_jax.data.curate.write import write_new_part
from fc_jax.video import VideoError, read_video
from fc_jax.vlm import VLMClient, VLMConfig, VLMError

STAGES = ("filter", "caption", "tryoff", "tryon", "write")


def _pool(jobs, fn, workers: int, stage: str):
    """Run fn(job) over jobs with `workers` threads, showing progress."""
    from tqdm import tqdm

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for future in tqdm(concurrent.futures.as_completed([pool.submit(fn, j) for j in jobs]), total=len(jobs),
                           desc=stage, unit="item"):
            future.result()


def _guarded(manifest: Manifest, stage: str, item: str, work):
    """Run work() -> (outputs, reason) and record it; classify failures as rejections or errors."""
    started = time.time()
    try:
        outputs, reason = work()
        status = "rejected" if reason else "done"
    except AnswerError as e:
        outputs, status, reason = {}, "rejected", f"malformed VLM answer: {e}"
    except EditError as e:
        outputs, status, reason = {}, "error" if e.transient else "rejected", f"edit failed: {e}"
    except VLMError as e:
        outputs, status, reason = {}, "error", f"VLM failed: {e}"
    except (VideoError, OSError) as e:
        outputs, status, reason = {}, "error", f"{type(e).__name__}: {e}"
    manifest.finish(item, stage, status, outputs, reason, time.time() - started)


def _image(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class Curation:
    def __init__(self, config):
        if not config.work_dir:
            raise ValueError("--config.work_dir is required (the manifest, clips and data set go there)")
        self.c = config
        self.work = config.work_dir
        os.makedirs(os.path.join(self.work, "images"), exist_ok=True)
        self.manifest = Manifest(os.path.join(self.work, "manifest.sqlite"))
        self.notes: dict = {}
        self._client = self._backend = None

    # -- servers, made on first use (stage 1 needs neither) --------------------------------------------------

    @property
    def client(self) -> VLMClient:
        if self._client is None:
            v = self.c.vlm
            if not v.base_url or not v.model:
                raise ValueError("vlm.base_url and vlm.model must be set for the caption, tryoff and tryon stages")
            self._client = VLMClient(VLMConfig(base_url=v.base_url, api_key=v.api_key or None, timeout=v.timeout,
                                               max_retries=v.max_retries, backoff=v.backoff,
                                               cache_dir=v.cache_dir or None, concurrency=64))
        return self._client

    @property
    def backend(self) -> HTTPEditBackend:
        if self._backend is None:
            self._backend = HTTPEditBackend(self.c.edit)
        return self._backend

    # -- stages -------------------------------------------------------------------------------------------

    def filter(self) -> None:
        f = self.c.filter
        paths = sorted(p for p in glob.glob(self.c.input_glob, recursive=True) if os.path.isfile(p))
        if not paths:
            raise FileNotFoundError(f"no raw videos match input_glob={self.c.input_glob!r}")
        self.manifest.add_items([(filtering.video_id(p), "video", None, {"path": p}) for p in paths])
        faces = filtering.FaceCounter(f.face_min_score, f.face_upsample)
        scorers = filtering.Scorers(f)
        self.notes["aesthetic"] = "checked" if scorers.aesthetic else filtering.NOT_CONFIGURED
        self.notes["musiq"] = "checked" if scorers.quality else filtering.NOT_CONFIGURED

        def job(entry):
            vid, info = entry
            started = time.time()
            try:
                status, outputs, reason, clips = filtering.filter_video(
                    info["path"], self.work, f, self.c.dataset, faces, scorers)
            except (VideoError, OSError) as e:
                self.manifest.finish(vid, "filter", "error", {}, f"{type(e).__name__}: {e}", time.time() - started)
                return
            self.manifest.finish(vid, "filter", status, outputs, reason, time.time() - started,
                                 new_items=[(c, "clip", vid, i) for c, i, *_ in clips],
                                 new_rows=[(c, "filter", st, m, why) for c, _, st, m, why in clips])

        _pool(self.manifest.todo("video", "filter", None), job, f.workers, "filter")

    def caption(self) -> None:
        v = self.c.vlm
        filtered = {i: out for i, _, out in self.manifest.done("filter")}

        def job(entry):
            item = entry[0]

            def work():
                frames = read_video(filtered[item]["clip"]["video"]).frames
                return captioning.caption_clip(self.client, v.model, frames, v.caption_frames, v.max_tokens), ""
            _guarded(self.manifest, "caption", item, work)

        _pool(self.manifest.todo("clip", "caption", "filter"), job, self.c.caption.workers, "caption")

    def tryoff(self) -> None:
        types = [t.strip() for t in self.c.tryoff.garment_types.split(",") if t.strip()]
        filtered = {i: out for i, _, out in self.manifest.done("filter")}

        def job(entry):
            item = entry[0]

            def work():
                frame = _image(filtered[item]["clip"]["frame"])
                garment, verdict, reason = tryoff.extract_garment(frame, self.backend, self.client, self.c.vlm.model,
                                                                  types)
                path = os.path.join(self.work, "images", item.replace("/", "__") + "_garment.png")
                Image.fromarray(garment).save(path)
                return {"garment": path, "verdict": verdict}, reason
            _guarded(self.manifest, "tryoff", item, work)

        _pool(self.manifest.todo("clip", "tryoff", "caption"), job, self.c.tryoff.workers, "tryoff")

    def tryon(self) -> None:
        t = self.c.tryon
        embed = tryon.ClipEmbedder(t.clip) if t.clip else tryon.histogram_embedding
        self.notes["garment_retrieval"] = "CLIP image embeddings" if t.clip else "colour histograms (no tryon.clip)"
        filtered = {i: out for i, _, out in self.manifest.done("filter")}
        pool = [{"id": i, "parent": info["parent"], "garment_type": out["verdict"]["garment_type"],
                 "path": out["garment"], "embedding": embed(_image(out["garment"]))}
                for i, info, out in self.manifest.done("tryoff")]
        by_id = {g["id"]: g for g in pool}

        def job(entry):
            item, info = entry
            own = by_id[item]

            def work():
                chosen = tryon.choose_garment(item, info["parent"], own["garment_type"], own["embedding"], pool,
                                              t.candidates, self.c.seed)
                if chosen is None:
                    return {}, f"retrieval: no {own['garment_type']} garment from another video in the pool"
                reference, verdict, reason = tryon.try_on(_image(filtered[item]["clip"]["frame"]),
                                                          _image(chosen["path"]), own["garment_type"], self.backend,
                                                          self.client, self.c.vlm.model)
                path = os.path.join(self.work, "images", item.replace("/", "__") + "_reference.png")
                Image.fromarray(reference).save(path)
                return {"reference": path, "garment_from": chosen["id"], "verdict": verdict}, reason
            _guarded(self.manifest, "tryon", item, work)

        _pool(self.manifest.todo("clip", "tryon", "tryoff"), job, t.workers, "tryon")

    def write(self) -> None:
        """A new data set part with the clips that passed all stages since the last write (see `write.py`)."""
        self.notes["dataset"] = write_new_part(self.manifest, os.path.join(self.work, "dataset"), self.c.dataset,
                                               self.c.dataset.split)

    def run(self) -> dict:
        wanted = [s.strip() for s in self.c.stages.split(",") if s.strip()]
        unknown = set(wanted) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; the stages are {STAGES}")
        for stage in STAGES:
            if stage in wanted:
                getattr(self, stage)()
        summary = summarize(self.manifest, self.work, self.notes)
        self.manifest.close()
        return summary
