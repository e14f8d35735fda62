"""Data curation (REFERENCE §8): raw videos -> FashionTriplets, in four resumable stages.

    python -m fc_jax.data.curate --config=curate \
        --config.input_glob='/data/raw/**/*.mp4' --config.work_dir=/data/curate \
        --config.vlm.base_url=http://127.0.0.1:8000/v1 --config.vlm.model=Qwen/Qwen2.5-VL-72B-Instruct \
        --config.edit.kind=openai --config.edit.base_url=http://127.0.0.1:8001/v1 --config.edit.model=qwen-image-edit

The triplet data set is written under `<work_dir>/dataset` (then: python -m fc_jax.data.preencode ...); the
SQLite manifest, clips and images under `<work_dir>`; `summary.json` and `rejected.jsonl` beside them.
Kill it at any time and run the same command again: finished work is not redone. Run it again after adding raw
videos: their triplets are added to the data set as a new part (`dataset/part-NNNNN`; read as one data set).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.input_glob = ""  # raw videos (recursive glob), e.g. /data/raw/**/*.mp4
    c.work_dir = ""  # manifest.sqlite, clips/, images/, dataset/part-NNNNN/, summary.json, rejected.jsonl
    c.stages = "filter,caption,tryoff,tryon,write"  # run a prefix or subset; each skips finished items
    c.seed = 0

    # The training geometry of the written data set (REFERENCE §5: 81 frames of 1280 x 704 portrait).
    c.dataset = ml_collections.ConfigDict(dict(num_frames=81, height=1280, width=704, split="train"))

    # Stage 1: coarse (metadata, scene length) then fine (motion, one person, aesthetics, quality).
    f = c.filter = ml_collections.ConfigDict()
    f.workers = 2
    f.min_height = 480  # the short side of the raw video, pixels
    f.min_fps, f.max_fps = 15.0, 61.0
    f.scene_detector = "histogram"  # PySceneDetect: histogram | content | adaptive
    f.scene_threshold = 0.2  # the detector's own threshold (histogram: 0.2, content: 27, adaptive: 3)
    f.min_scene_frames = 15  # no cut closer than this to the previous one
    f.min_seconds = 2.0  # a clip shorter than this, or than dataset.num_frames frames, is dropped
    f.max_clips_per_video = 8
    f.analysis_width = 256  # frames are shrunk to this width for motion and person checks
    f.motion_pairs = 16  # consecutive frame pairs (evenly spread) measured by Farnebäck flow
    f.min_motion, f.max_motion = 0.002, 0.04  # mean flow length per frame, as a fraction of the frame width
    f.person_frames = 4  # frames (evenly spread) searched for faces; exactly one face in each is required
    f.face_min_score = 0.5  # dlib HOG detector score threshold (its weak false hits score below)
    f.face_upsample = 1
    f.aesthetic_clip = ""  # CLIP ViT-L/14 folder/checkpoint (transformers layout); empty: aesthetics not checked
    f.aesthetic_head = ""  # LAION `sac+logos+ava1-l14-linearMSE.pth`
    f.min_aesthetic = 5.0
    f.aesthetic_frames = 4
    f.musiq_checkpoint = ""  # MUSIQ `spaq_ckpt.npz`; empty: quality not checked
    f.musiq_model = ""  # JSON MusiqConfig changes for a checkpoint of another architecture, e.g. {"num_classes": 10}
    f.min_musiq = 50.0  # MOS on SPAQ's [0, 100] scale
    f.musiq_frames = 2

    # The VLM (OpenAI-compatible chat completions) for captions and validation.
    v = c.vlm = ml_collections.ConfigDict()
    v.base_url = ""
    v.api_key = ""
    v.model = ""
    v.timeout = 120.0
    v.max_retries = 4
    v.backoff = 1.0
    v.cache_dir = ""  # empty: no response cache
    v.caption_frames = 4  # frames shown to the captioner
    v.max_tokens = 512

    # The image-edit backend (try-off and try-on): `openai` = POST {base_url}/images/edits (multipart),
    # `json` = POST {base_url} with {"model", "prompt", "images": [data URLs]} -> {"image": base64 PNG/JPEG}.
    e = c.edit = ml_collections.ConfigDict()
    e.kind = "openai"
    e.base_url = ""
    e.api_key = ""
    e.model = ""
    e.size = ""  # e.g. 1024x1536 for the openai kind; empty: the server's default
    e.timeout = 300.0
    e.max_retries = 4
    e.backoff = 2.0  # first wait, doubled each retry (a server's numeric Retry-After is taken instead)
    e.max_backoff = 60.0

    c.caption = ml_collections.ConfigDict(dict(workers=4))
    c.tryoff = ml_collections.ConfigDict(dict(workers=4, garment_types="upper,lower,dress,outerwear,jumpsuit"))
    t = c.tryon = ml_collections.ConfigDict()
    t.workers = 4
    # Garment retrieval embedding: CLIP ViT-L/14 image embeddings from this checkpoint (transformers layout);
    # empty: a colour-histogram embedding (cheap, appearance only) is used and the summary says so.
    t.clip = ""
    t.candidates = 4  # pick at random (seeded by the item) among this many least similar garments of the type
    return c
