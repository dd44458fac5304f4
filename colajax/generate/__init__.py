"""Generation for every model family: token choice, samplers (Cola block sampler; AR and LLaDA
baselines)."""
