"""Classical control: JAX environments, inventory HDPO, NDP, LPN and PureJaxRL-style PPO."""
