"""Planning and model-based RL: IWOCS (robust MDPs), tabular solvers, COPlanner, ScaleZero pieces."""
