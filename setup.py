"""colajax: JAX/TPU scaling codebase for Cola DLM (continuous latent diffusion LM)."""

import setuptools

setuptools.setup(
    name="colajax",
    version="0.1.0",
    description="Cola DLM (Text VAE + block-causal DiT) training, sampling and evaluation in JAX",
    packages=setuptools.find_packages(include=["colajax", "colajax.*"]),
    package_data={
        "colajax": ["data/corpus/*", "data/corpus/tasks/*.jsonl", "eval/*.json", "sweep/*.csv"]
    },
    python_requires=">=3.11",
    # Ranges that cover the CPU pin (jax 0.10.2) and the GPU/TPU machines (jax 0.11.x).
    install_requires=[
        "jax>=0.10.2,<0.12",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6",
        "sentencepiece>=0.2.0",
        "ml-collections>=1.1.0",
        "tensorflow-datasets>=4.9.10",
        "numpy>=2.0",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "tpu": ["jax[tpu]>=0.10.2,<0.12", "gcsfs>=2024.6", "google-cloud-storage>=2.14"],
        "aot": ["libtpu==0.0.42.1"],  # compile for TPU slices on a CPU host (colajax aot)
        "gcs": ["gcsfs>=2024.6", "google-cloud-storage>=2.14"],  # gs:// workdirs and data
        "gpu": ["jax[cuda12]>=0.10.2,<0.12"],
        "hf": ["safetensors>=0.4", "tokenizers>=0.19"],
        "test": ["pytest>=8", "chex>=0.1.90", "ruff>=0.6", "safetensors>=0.4", "tokenizers>=0.19"],
    },
    entry_points={"console_scripts": ["colajax=colajax.main:run"]},
)
