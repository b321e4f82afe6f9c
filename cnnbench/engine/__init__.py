"""One training run: its set-up from the config (build), the loop (train), its typed progress
(state), scoring (validation), checkpoints and the run folder, stop signals and NaN losses
(faults), the weight average (ema), what it reports (metrics, board, figures)."""
