"""rlpost: a JAX research codebase for policy-gradient methods."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.6",
    "flax>=0.11",
    "optax>=0.2.4",
    "chex>=0.1.89",
    "orbax-checkpoint>=0.11",
    "transformers>=4.50",
    "tokenizers>=0.20",
    "safetensors>=0.4",
    "datasets>=3.0",
    "absl-py>=2.0",
    "ml_collections>=0.1.1",
    "numpy>=1.26",
    "scipy>=1.11",  # norm.ppf / KD-tree oracles for the inventory and offline references
    "matplotlib>=3.8",  # every experiment binary writes a curves.png
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "tqdm>=4.66",  # progress bars in the experiment binaries
    "gymnax>=0.0.8",  # CartPole/Acrobot/Pendulum for the control and meta loops
    "evosax>=0.2",  # Open_ES / CMA-ES for meta-training and IWOCS
    "six",  # imported by gymnax's bsuite environments without being declared by gymnax
]

EXTRAS = {
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3.5",  # the README test command runs two workers (2-core CI machine)
        "hypothesis>=6.100",
        "rlax>=0.1.9",  # reference implementation for the GAE parity test
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
    ],
    # CPU build of torch; used only for parity tests and peer benchmarks.
    "torch": ["torch==2.13.0"],
    # Peer implementations for benchmarks/grpo_step.py (TRL's GRPOTrainer; pulls in accelerate).
    "peers": ["torch==2.13.0", "trl==1.16.0"],
}

setuptools.setup(
    name="rlpost",
    version="0.1.0",
    description="Policy-gradient methods for LLM post-training and control, on one functional JAX core.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["rlpost", "rlpost.*"]),
    package_data={"rlpost": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
