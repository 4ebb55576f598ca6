"""TFDS builders of the public gaze datasets, and the registry `load_dataset` consults.

``DATASETS`` maps a ``config.data.name`` to a function ``(data_config) -> GazeDataset``
that prepares the dataset from the user's ``manual_dir`` (once) and reads it back.
"""

DATASETS = {}
