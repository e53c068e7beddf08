"""Evolution: archive, generation loop, DEAP toolbox, checkpoints and CLI."""
