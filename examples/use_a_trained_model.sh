#!/usr/bin/env bash
# Everything you can do with a trained model, on built-in synthetic data (a few minutes on a laptop CPU).
# Usage: examples/use_a_trained_model.sh [WORKDIR]   (default: ./lolnerf_example)
set -euo pipefail
W=${1:-lolnerf_example}
mkdir -p "$W"

# 1. a dataset with known cameras (64 photos, plus 2 unseen objects with 5 views each) and a small model
lolnerf synth "$W/data" --n 64 --resolution 32 --holdout 2
lolnerf train "$W/data" --out "$W/run" --preset tiny --steps 300

# 2. lift two unseen photos into 3D (their cameras are known here; for a real photo leave out --camera
#    and the camera is fitted from face landmarks against RUN/keypoints.json: MediaPipe, the [landmarks] extra)
lolnerf invert "$W/data/holdout/images/h0000_q.png" "$W/data/holdout/images/h0001_q.png" \
    --model "$W/run" --camera "$W/data/holdout/transforms.json" --out "$W/faces.safetensors"
#    -> faces.safetensors (one latent per photo) and faces_preview.png (photo | reconstruction | novel view)

# 3. render the first one from the holdout's other cameras, with depth maps, and as an orbit video
lolnerf render --model "$W/run" --latent "$W/faces.safetensors" --row 0 \
    --camera "$W/data/holdout/transforms.json" --out "$W/views" --depth
lolnerf render --model "$W/run" --latent "$W/faces.safetensors" --orbit --out "$W/orbit.mp4" --resolution 64

# 4. new identities from the latent Gaussian (truncation 0.7), and a walk between latents
lolnerf sample --model "$W/run" --n 9 --truncation 0.7 --seed 0 --out "$W/samples" --resolution 64
lolnerf interpolate --model "$W/run" --from index:0 --to "$W/faces.safetensors:1" --to "$W/samples/latents.safetensors:3" \
    --out "$W/walk.gif" --frames 36 --resolution 64

# 5. a coloured mesh of one training identity
lolnerf export-mesh --model "$W/run" --index 0 --out "$W/mesh.ply" --grid 96
