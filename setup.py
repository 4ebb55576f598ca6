"""PrivatEyes-JAX: privacy-preserving federated gaze estimation with secure multi-server aggregation."""

import setuptools

setuptools.setup(
    name='privateyes_jax',
    version='0.1.0',
    description=('PrivatEyes in JAX: federated gaze estimation with actively secure '
                 'multi-party aggregation, and the DualView attack.'),
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['privateyes_jax', 'privateyes_jax.*',
                                               'experiments', 'experiments.*',
                                               'data_prep', 'data_prep.*']),
    python_requires='>=3.10',
    # Ranges admit both the CPU machines (Python 3.11, jax 0.10.x) and GPU hosts
    # (Python 3.12, jax 0.11.x).
    install_requires=[
        'jax>=0.6.0',
        'flax>=0.10.0',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11.0',
        'numpy>=1.26',
        'absl-py>=2.1',
        'ml_collections>=0.1.1',
        'tensorflow-datasets>=4.9.7',
        'importlib_resources>=6.0',  # TFDS without TensorFlow needs it.
        'array_record>=0.5',
        'etils[epath,epy]>=1.7',
        'scipy>=1.11',  # MATLAB .mat readers (MPIIGaze), KDE for the gaze-distribution metric.
        'h5py>=3.9',  # MATLAB v7.3 and the preprocessed .h5 files.
        'pillow>=10.0',  # Images of GazeCapture, raw MPIIFaceGaze and your own study.
        'dm-pix>=0.4.2',  # PSNR / SSIM of DualView reconstructions.
        'matplotlib>=3.8',  # Reconstruction grids, gaze plots, report figures.
        'tensorboardX>=2.6',  # TensorBoard event files beside metrics.jsonl (no TensorFlow).
        # Client-level (ε, δ) accounting of the noisy aggregate (privacy/accounting.py). Its own
        # pins (attrs<24, dm-tree~=0.1.8, scipy~=1.7, numpy<3) admit Python 3.12 hosts.
        'dp-accounting>=0.6.0',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'chex>=0.1.87', 'hypothesis>=6.100'],
    },
    entry_points={
        'console_scripts': [
            'privateyes-train=experiments.train:entry_point',
            'privateyes-demo=experiments.demo:entry_point',
            'privateyes-prepare=data_prep.prepare:entry_point',
            'privateyes-attack=experiments.attack:entry_point',
            'privateyes-report=experiments.report:entry_point',
            'privateyes-sweep=experiments.sweep:entry_point',
            'privateyes-inspect=experiments.inspect_run:entry_point',
        ],
    },
)
