"""Energy beyond the GPUs' kernels and its conversion to carbon: serving-engine energy, grid carbon
intensity and PUE, embodied carbon."""
