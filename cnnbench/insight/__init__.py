"""What a network learned and how it trains, measured on the model itself: per-layer gradient norms
and activation statistics (gradients.py), the first layer's filters and each stage's feature maps
(features.py). Tensors in, numbers and tensors out: the run draws them (engine/figures.py)."""
