"""Known harmless warnings stay silent at their source: jax's TPU probe note (dropped by the command-line
helper), TensorFlow Datasets' banners and progress bars when fc_jax writes a data set, tensorboardX's NaN warning
(non-finite values are not sent to it)."""

from __future__ import annotations

import logging
import math
import os

import numpy as np


def test_the_tpu_probe_note_is_dropped_and_other_jax_warnings_are_not(caplog):
    from fc_jax import cli

    cli.quiet_known_warnings()
    cli.quiet_known_warnings()  # idempotent
    logger = logging.getLogger("jax._src.xla_bridge")
    assert len(logger.filters) == len(set(map(id, logger.filters)))
    with caplog.at_level(logging.WARNING, logger="jax._src.xla_bridge"):
        logger.warning("A Google TPU may be present on this machine, but either a TPU-enabled jaxlib or libtpu is "
                       "not installed. Falling back to cpu.")
        logger.warning("An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not installed.")
    assert [r.getMessage()[:20] for r in caplog.records] == ["An NVIDIA GPU may be"]


def test_writing_a_data_set_prints_nothing(tmp_path, capfd):
    from fc_jax.data import synthetic, triplets

    builder = triplets.write_dataset("latents", str(tmp_path), {
        "train": synthetic.synthetic_latents(3, 3, 4, 2, 48, 32, seed=0, max_text_len=16)})
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), (out, err)  # no "Downloading and preparing", no bars, no "Variant folder"
    assert triplets.open_builder("latents", str(tmp_path)).info.splits["train"].num_examples == 3
    assert builder.is_prepared()


def test_non_finite_values_are_printed_not_sent_to_tensorboard(tmp_path, capfd):
    from tensorboardX.proto import event_pb2

    from fc_jax.training.logger import MetricLogger

    logger = MetricLogger(str(tmp_path), total_steps=2, start_step=0, enabled=True)
    logger.scalars(1, {"eval/loss": float("nan"), "eval/psnr": 3.0})
    logger.flush(1, tokens_per_step=10)  # no timed step yet: step time and tokens/s are NaN
    logger.close()
    out, err = capfd.readouterr()
    assert "eval/loss nan" in out and "NaN or Inf" not in out + err
    (events,) = os.listdir(tmp_path / "tensorboard")
    data, tags, offset = (tmp_path / "tensorboard" / events).read_bytes(), {}, 0
    while offset < len(data):
        (length,) = np.frombuffer(data[offset: offset + 8], np.uint64)
        event = event_pb2.Event.FromString(data[offset + 12: offset + 12 + int(length)])
        offset += 12 + int(length) + 4
        tags.update({v.tag: v.simple_value for v in event.summary.value})
    assert set(tags) == {"eval/psnr"} and math.isfinite(tags["eval/psnr"])
