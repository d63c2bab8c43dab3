"""esper-simic: Esper's reinforcement-learning trainer and experiment framework."""

__version__ = "0.1.0"
