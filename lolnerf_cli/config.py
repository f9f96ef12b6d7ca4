"""Dataclass configurations and named presets. `RUN/config.json` is a dump of `Config`.

Every number that shapes a model, a renderer or a training run lives here, and so do the defaults of
inversion, videos and evaluation (the commands' defaults read them). Sections added after run folders
existed are optional in config.json (their defaults apply) and are not part of the model hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InputError, ParamError


@dataclass
class ModelConfig:
    """The latent-conditioned foreground NeRF and the background model."""

    latent_dim: int = 64          # D: width of one latent row z_k
    width: int = 128              # hidden units per layer of the foreground MLP
    depth: int = 6                # hidden layers of the foreground MLP
    skips: tuple[int, ...] = (3,)  # hidden layers whose input is re-joined with [enc(x), z]
    pos_freqs: int = 6            # positional-encoding octaves of x (NeRF: 10)
    bg_width: int = 64            # background MLP width
    bg_depth: int = 2             # background MLP hidden layers
    dir_freqs: int = 4            # positional-encoding octaves of the ray direction (background)
    density_bias: float = -1.0    # added before the softplus, so an untrained field starts nearly empty
    scene_radius: float = 1.0     # the object fits inside this sphere (SPEC object frame)
    # "pe": NeRF's positional encoding of sample points; "ipe": each sample is a Gaussian over its ray
    # interval and pixel footprint and every frequency is attenuated by its variance (anti-aliased,
    # mip-NeRF's idea; needs render.sampler = "proposal", whose samples are intervals)
    encoding: str = "pe"
    proposal_levels: int = 0      # small density networks that place the main field's samples (0: none)
    proposal_width: int = 64      # their hidden width ...
    proposal_depth: int = 2       # ... hidden layers ...
    proposal_freqs: int = 4       # ... and positional-encoding octaves (coarse: they only find surfaces)


# Keys added after run folders already existed, with the value that reproduces the old behaviour. They
# are left out of the model hash at these values, so old runs keep their hash (latent files, resume).
_MODEL_KEYS_LEGACY = {"encoding": "pe", "proposal_levels": 0, "proposal_width": 64, "proposal_depth": 2,
                      "proposal_freqs": 4}


SAMPLERS = ("hierarchical", "proposal")   # the values of render.sampler
CAMERA_PIVOTS = ("object", "camera")      # the values of invert.camera_pivot


def check_sampler(value: Any, where: str, flag: bool = False) -> None:
    """One clear error unless `value` names a sampler: ParamError for a command-line flag (`where` is its
    name without dashes), InputError otherwise."""
    if value not in SAMPLERS:
        msg = f"must be {' or '.join(map(repr, SAMPLERS))}, got {json.dumps(value)}"
        raise ParamError(where, msg) if flag else InputError(where, msg)


@dataclass
class RenderConfig:
    # "hierarchical": n_coarse stratified + n_fine importance samples, all through the main field (NeRF);
    # "proposal": proposal_samples[i] samples through proposal network i, then n_samples through the main
    # field, resampled from the last proposal's weights (mip-NeRF 360 / nerfacto)
    sampler: str = "hierarchical"
    n_coarse: int = 32            # hierarchical: stratified samples per ray
    n_fine: int = 32              # hierarchical: importance samples per ray (same network)
    proposal_samples: tuple[int, ...] = (64,)   # proposal: samples per ray of each proposal level
    n_samples: int = 32           # proposal: main-field samples per ray
    image_sample_factor: int = 2  # whole images (render, sample, interpolate, eval, previews) take this many times
                                  # the samples above per ray; training and inversion take them as they are
    chunk: int = 8192             # rays per forward pass when rendering whole images
    near_min: float = 0.05        # never start a ray closer than this to its camera


@dataclass
class TrainConfig:
    steps: int = 15000
    images_per_step: int = 128    # B: images drawn per step (many images, few pixels each: every
    pixels_per_image: int = 8     # P: latent row gets frequent updates; random pixels per image
    resolution: int = 64          # training images are cached at this size (square)
    lr: float = 5e-4              # network learning rate at step 0 ...
    lr_final: float = 1e-4        # ... decayed exponentially to this at the last step
    latent_lr: float = 3e-2       # sparse Adam learning rate of the latent table (decays by the same factor)
    latent_init_std: float = 0.01  # latent rows start as small Gaussian noise
    rgb_weight: float = 1.0
    mask_weight: float = 0.1
    hard_surface_weight: float = 0.1
    encoding_anneal: float = 0.25   # "ipe": the encoding's octaves open coarse to fine over this fraction of the steps
    interlevel_weight: float = 1.0  # proposal sampler: proposal weights must bound the main field's (mip-NeRF 360)
    symmetry_weight: float = 0.0    # mirror symmetry of shape about the object frame's x = 0 plane (losses.symmetry_loss);
                                    # 0: off. For classes that are left-right symmetric in a face5 (or true) frame
    symmetry_every: int = 4         # ... computed on every this-many-th ray of a step
    grad_clip: float = 1.0        # max global grad norm of the network
    micro_batch_rays: int = 256   # on CPU, rays per forward/backward pass within a step, gradients summed (0: all
                                  # at once): the same step with activations in cache; GPUs take whole steps
    max_bad_steps: int = 20       # consecutive non-finite losses before training stops
    precision: str = "auto"       # auto | bf16 | fp32
    log_every: int = 50
    preview_every: int = 1000
    checkpoint_every: int = 500
    seed: int = 0
    min_landmark_rmse_excluded: bool = True  # frames flagged by fit-cameras are left out
    # per-image camera refinement (camera_refine.py): "on", "off", or "auto" (on for landmark-fitted cameras,
    # off for known ones); a new run's config.json holds what was decided. Off by default: on 64 px synth
    # heads it lowered every image score (docs/cameras.md)
    refine_cameras: str = "off"
    camera_lr: float = 3e-3       # sparse Adam learning rate of the corrections (decays like the others)
    camera_warmup: float = 0.1    # the corrections stay at zero for this fraction of the steps (a blurry early
                                  # field pulls cameras the wrong way: docs/cameras.md)
    camera_prior: float = 1e-3    # weight of |correction|^2 (radians, scene units): pulls towards the fit
    camera_momentum: float = 0.99  # sparse Adam's first-moment decay of the corrections: each visit of a photo
                                   # brings only pixels_per_image rays, so its pose gradient is noisy
    camera_recentre_every: int = 100  # steps between removals of the mean correction (the gauge)


@dataclass
class InvertConfig:
    """Lifting photos into latents (`lolnerf invert`, and the inversions of `lolnerf eval`)."""

    steps: int = 200              # optimisation steps
    latent_basis: str = "pca"     # "pca": the latent moves along the table's principal axes, steps scaled by the
                                  # table's spread along each (invert.latent_steps); "raw": along its own coordinates
    lr: float = 0.1               # Adam learning rate of the latents at step 0 ("raw" was tuned at 0.05) ...
    lr_final_factor: float = 0.1  # ... decayed (cosine) to this fraction of it at the last step
    latent_prior: float = 1e-3    # weight of the latent table's Gaussian prior (mean squared whitened principal
                                  # coordinate of each photo's latent, beside its RGB loss); 0: none
    camera_lr: float = 2e-3       # Adam learning rate of the camera correction (radians / scene units)
    camera_pivot: str = "object"  # the correction turns the camera about the object frame's origin ("object": the
                                  # way landmark fits and encoders err) or about its own centre ("camera", the old way)
    encoder_camera_lr: float = 2e-3  # ... when the camera came from the encoder (optimised with the latent by default)
    rays_per_image: int = 512     # random pixels of each photo per step (all pixels when the image is smaller)
    max_rays_per_step: int = 16384  # photos are optimised in groups so that one step renders at most this many rays
    novel_yaw_deg: float = 30.0   # the "novel view" of previews: the input camera turned this far about +Y


@dataclass
class VideoConfig:
    """Orbit videos, depth colours and contact sheets (`render`, `sample`, `interpolate`, previews)."""

    fps: int = 24                 # frames per second of every video written
    orbit_frames: int = 60        # frames of `render --orbit`
    orbit_yaw_deg: float = 35.0   # yaw amplitude of an orbit around the mean view
    orbit_pitch_deg: float = 12.0  # pitch amplitude of an orbit around the mean view
    depth_colormap: str = "turbo"  # matplotlib colour map of depth images (near = its low end)
    mp4_quality: int = 8          # imageio-ffmpeg quality 0..10 (10 = best)
    sheet_min_tile: int = 128     # contact sheets (sample grid, inversion preview) show each image at least this big
    sheet_pad: int = 4            # pixels between the tiles of a contact sheet


@dataclass
class EvalConfig:
    """`lolnerf eval` (docs/evaluation.md)."""

    subset: int = 200             # training (and held-out) images scored; 0 = all of them
    invert_steps: int = 200       # optimisation steps per inversion (held-out and novel sections)
    seed: int = 0                 # picks the subset and seeds the inversions
    precision: str = "fp32"       # fp32 by default: numbers comparable across machines
    figure_rows: int = 3          # figure rows per kind (novel-view objects, training images)
    frames: str = "auto"          # camera frame of held-out / novel cameras: auto, as-given or query
    upsample: int = 0             # >= 2: also score novel views rendered this many times finer (synth data)
    encoder_steps: int = 30       # with RUN/encoder.safetensors: optimisation steps of the "hybrid" answer
    encoder_refine_camera: bool = True  # ... which also optimise the encoder's camera (as `invert` does)
    refine_query_camera: bool = True    # "query" frames: the inversion also corrects the landmark-fitted query
                                        # camera (as `invert` does), and the other views follow it
    sections: str = "all"         # comma-separated sections to run (evaluate.SECTION_NAMES), or "all"


@dataclass
class Config:
    preset: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists), the inverse of `config_from_dict`."""
        return json.loads(json.dumps(asdict(self)))

    def model_hash(self) -> str:
        """Short hash of everything that shapes the network (not of training settings)."""
        shape = {k: v for k, v in asdict(self.model).items()
                 if not (k in _MODEL_KEYS_LEGACY and v == _MODEL_KEYS_LEGACY[k])}
        blob = json.dumps(shape, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def main_samples_per_ray(self) -> int:
        """Main-field evaluations per ray of the configured sampler."""
        r = self.render
        return r.n_samples if r.sampler == "proposal" else r.n_coarse + r.n_fine

    def override(self, key: str, value: Any) -> None:
        """Set "section.name" to `value`, checked like a config.json value (one InputError naming the key)."""
        section, _, name = key.partition(".")
        part = getattr(self, section, None) if section in _SECTIONS else None
        if part is None or name not in {f.name for f in dataclasses.fields(part)}:
            raise InputError(key, f"is not a configuration setting (sections: {', '.join(_SECTIONS)})")
        setattr(part, name, _checked(name, value, getattr(type(part)(), name), key))

    def check(self, where: str = "config.json") -> "Config":
        """Cross-field consistency; an InputError naming `where` otherwise."""
        m, r = self.model, self.render
        if r.sampler not in SAMPLERS:
            raise InputError(where, f"render.sampler must be 'hierarchical' or 'proposal', got '{r.sampler}'")
        if m.encoding not in ("pe", "ipe"):
            raise InputError(where, f"model.encoding must be 'pe' or 'ipe', got '{m.encoding}'")
        if r.sampler == "proposal":
            if m.proposal_levels < 1 or len(r.proposal_samples) != m.proposal_levels:
                raise InputError(where, f"render.sampler 'proposal' needs model.proposal_levels >= 1 and one "
                                        f"render.proposal_samples count per level (got {m.proposal_levels} levels, "
                                        f"{len(r.proposal_samples)} counts)")
            if min(r.proposal_samples) < 2 or r.n_samples < 2:
                raise InputError(where, "proposal_samples and n_samples must each be at least 2")
        elif m.encoding == "ipe":
            raise InputError(where, "model.encoding 'ipe' needs render.sampler 'proposal' (its samples are intervals)")
        elif r.n_coarse < 2:
            raise InputError(where, "render.n_coarse must be at least 2")
        if self.train.refine_cameras not in ("auto", "on", "off"):
            raise InputError(where, f"train.refine_cameras must be 'auto', 'on' or 'off', got '{self.train.refine_cameras}'")
        if r.image_sample_factor < 1:
            raise InputError(where, f"render.image_sample_factor must be at least 1, got {r.image_sample_factor}")
        if not self.train.symmetry_weight >= 0 or self.train.symmetry_every < 1:
            raise InputError(where, f"train.symmetry_weight must be 0 or more and train.symmetry_every at least 1, "
                                    f"got {self.train.symmetry_weight:g} and {self.train.symmetry_every}")
        if not self.invert.latent_prior >= 0:
            raise InputError(where, f"invert.latent_prior must be 0 or more, got {self.invert.latent_prior:g}")
        if self.invert.camera_pivot not in CAMERA_PIVOTS:
            raise InputError(where, f"invert.camera_pivot must be one of {', '.join(CAMERA_PIVOTS)}, "
                                    f"got '{self.invert.camera_pivot}'")
        return self


def _preset_tiny() -> Config:
    return Config(
        preset="tiny",
        model=ModelConfig(latent_dim=16, width=32, depth=3, skips=(), pos_freqs=4, bg_width=16, bg_depth=1),
        render=RenderConfig(n_coarse=12, n_fine=12, chunk=4096),
        train=TrainConfig(steps=50, images_per_step=8, pixels_per_image=16, resolution=32, log_every=10,
                          preview_every=50, checkpoint_every=25, latent_lr=1e-2),
    )


def _preset_cpu() -> Config:
    # NeRF's hierarchical sampler with 16 + 16 main-field samples per ray: at 0.70x the time per step of
    # proposal 64 + 32 it grows the nose that the proposal sampler paints on (docs/sampling.md)
    return Config(preset="cpu",
                  render=RenderConfig(sampler="hierarchical", n_coarse=16, n_fine=16),
                  train=TrainConfig(steps=20000, lr=4e-3, lr_final=4e-4))


def _preset_paper() -> Config:
    return Config(
        preset="paper",
        model=ModelConfig(latent_dim=256, width=256, depth=8, skips=(4,), pos_freqs=10, bg_width=128, bg_depth=2,
                          encoding="ipe", proposal_levels=2),
        render=RenderConfig(sampler="proposal", proposal_samples=(64, 64), n_samples=32, chunk=8192),
        train=TrainConfig(steps=500000, images_per_step=64, pixels_per_image=32, resolution=128,
                          preview_every=5000, checkpoint_every=2000, log_every=100),
    )


def _preset_paper_hires() -> Config:
    cfg = _preset_paper()
    cfg.preset = "paper-hires"
    cfg.model.width = 1024
    cfg.model.latent_dim = 2048
    cfg.train.resolution = 256
    return cfg


PRESETS = {"tiny": _preset_tiny, "cpu": _preset_cpu, "paper": _preset_paper, "paper-hires": _preset_paper_hires}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise ParamError("preset", f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


def _fill(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise InputError(where, f"section must be a JSON object, got {type(data).__name__}")
    defaults = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise InputError(where, f"unknown configuration key '{key}'")
        kwargs[key] = _checked(key, value, getattr(defaults, key), where)
    return cls(**kwargs)


def _checked(key: str, value: Any, default: Any, where: str) -> Any:
    """Check a configuration value against the type of its default."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise InputError(where, f"'{key}' must be a list of integers")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(where, f"'{key}' must be true or false, got {json.dumps(value)}"[:200])
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(where, f"'{key}' must be a non-negative integer, got {json.dumps(value)}"[:200])
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(where, f"'{key}' must be a finite number, got {json.dumps(value)}"[:200])
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InputError(where, f"'{key}' must be a string, got {json.dumps(value)}"[:200])
        return value
    return value


_SECTIONS = {"model": ModelConfig, "render": RenderConfig, "train": TrainConfig, "invert": InvertConfig,
             "video": VideoConfig, "eval": EvalConfig}


def config_from_dict(data: Any, where: str = "config.json") -> Config:
    """A Config from its JSON form; missing sections and keys take their defaults (older run folders)."""
    if not isinstance(data, dict):
        raise InputError(where, "configuration must be a JSON object")
    return Config(preset=str(data.get("preset", "custom")),
                  **{name: _fill(cls, data.get(name, {}), where) for name, cls in _SECTIONS.items()}).check(where)
