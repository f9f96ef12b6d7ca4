"""config.py: the inversion / video / eval sections, old config.json files, and checked overrides."""

from __future__ import annotations

import dataclasses

import pytest

from lolnerf_cli.config import Config, EvalConfig, InvertConfig, VideoConfig, config_from_dict, preset
from lolnerf_cli.errors import InputError
from lolnerf_cli.evaluate import EvalOptions
from lolnerf_cli.train import resolve_config


def test_presets_keep_their_model_hash():
    # the values of the release before these sections existed: run folders keep their hash. `cpu` went
    # back to the hierarchical sampler and NeRF's encoding, i.e. to lolnerf 0.1.0's network and its hash
    # (run folders of the proposal-sampler `cpu` preset keep theirs, 1f347b10f1d785f7, in their config.json)
    assert {n: preset(n).model_hash() for n in ("tiny", "cpu", "paper", "paper-hires")} == {
        "tiny": "06e23e5d188e03ac", "cpu": "ddb40f04a66a887b", "paper": "83ffe70cf3c6d887",
        "paper-hires": "1e3482f1798beb26"}


def test_old_config_json_without_the_new_sections_loads():
    cfg = preset("cpu")
    old = {k: v for k, v in cfg.to_dict().items() if k in ("preset", "model", "render", "train")}
    loaded = config_from_dict(old)
    assert loaded.model_hash() == cfg.model_hash()
    assert (loaded.invert, loaded.video, loaded.eval) == (InvertConfig(), VideoConfig(), EvalConfig())
    again = config_from_dict(cfg.to_dict())                  # and a new one round-trips
    assert again == cfg


def test_new_sections_are_checked_like_the_others():
    d = Config().to_dict()
    d["invert"]["steps"] = "many"
    with pytest.raises(InputError, match="'steps' must be a non-negative integer"):
        config_from_dict(d, "run/config.json")
    d = Config().to_dict()
    d["video"]["fpz"] = 3
    with pytest.raises(InputError, match="unknown configuration key 'fpz'"):
        config_from_dict(d)


def test_command_defaults_read_the_config():
    assert {f.name: getattr(EvalOptions(), f.name) for f in dataclasses.fields(EvalConfig)} == \
        dataclasses.asdict(EvalConfig())
    from lolnerf_cli import invert, video, views

    assert (invert.INVERT_STEPS, invert.INVERT_LR, video.VIDEO_FPS, views.NOVEL_YAW_DEG) == \
        (InvertConfig().steps, InvertConfig().lr, VideoConfig().fps, InvertConfig().novel_yaw_deg)


def test_overrides_are_type_checked(tmp_path):
    cfg = resolve_config(tmp_path, "tiny", False, {"train.steps": 7, "train.lr": 1, "model.pos_freqs": None})
    assert cfg.train.steps == 7 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    for key, value, word in (("train.steps", "ten", "non-negative integer"), ("train.lr", float("nan"), "finite"),
                             ("train.min_landmark_rmse_excluded", 1, "true or false"),
                             ("render.proposal_samples", [1.5], "list of integers"),
                             ("train.stepz", 3, "not a configuration setting"),
                             ("nosuch.steps", 3, "not a configuration setting")):
        with pytest.raises(InputError, match=word) as exc:
            resolve_config(tmp_path, "tiny", False, {key: value})
        assert str(exc.value).startswith(key), str(exc.value)


def test_a_negative_latent_prior_in_config_json_is_refused():
    d = Config().to_dict()
    d["invert"]["latent_prior"] = -0.1
    with pytest.raises(InputError, match="invert.latent_prior must be 0 or more"):
        config_from_dict(d, "run/config.json")


def test_a_negative_symmetry_weight_in_config_json_is_refused():
    d = Config().to_dict()
    d["train"]["symmetry_weight"] = -1.0
    with pytest.raises(InputError, match="train.symmetry_weight must be 0 or more"):
        config_from_dict(d, "run/config.json")
    d["train"]["symmetry_weight"], d["train"]["symmetry_every"] = 0.1, 0
    with pytest.raises(InputError, match="symmetry_every at least 1"):
        config_from_dict(d, "run/config.json")


def test_an_unknown_camera_pivot_in_config_json_is_refused():
    d = Config().to_dict()
    assert d["invert"]["camera_pivot"] == "object"
    d["invert"]["camera_pivot"] = "world"
    with pytest.raises(InputError, match="invert.camera_pivot must be one of object, camera, got 'world'"):
        config_from_dict(d, "run/config.json")
