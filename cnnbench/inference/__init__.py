"""Using a trained model: a checkpoint from anyone opened safely and its model rebuilt
(checkpoints), scored again on its data (evaluate), run on new images (predict), written as one
ONNX or TorchScript file (export)."""
