"""The files a run writes, each writer on its own: run dirs, checkpoints, TensorBoard, the handed-out model."""
