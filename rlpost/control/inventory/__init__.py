"""Inventory networks and HDPO (Alvo, Russo, Kanoria, Lee, 2023, arXiv:2306.11246).

  env        differentiable batched simulators (single store backlogged / lost sales, serial,
             one warehouse + N stores) and a gymnax-style `InventoryEnv`
  baselines  base-stock, capped base-stock, echelon-stock, newsvendor, closed-form backlog optimum
  dp         exact lost-sales optimum by relative value iteration (Zipkin 2008 reference values)
  policies   vanilla MLP and warehouse->store GNN policies (plain pytrees)
  hdpo       pathwise (BPTT) training with model selection on dev cost, test evaluation
  pg         REINFORCE / PPO baseline on the same problems via rlpost.core
  experiment driver behind experiments/inventory.py
"""
from rlpost.control.inventory.baselines import (Policy, backlog_optimal_cost, backlog_optimal_level,
                                                make_base_stock, make_capped_base_stock,
                                                make_echelon_stock, make_fixed_base_stock,
                                                make_warehouse_base_stock, newsvendor_level)
from rlpost.control.inventory.dp import LostSalesSolution, solve_lost_sales
from rlpost.control.inventory.env import (InventoryEnv, OneWarehouse, Serial, SingleStore,
                                          WarehouseAction, WarehouseState, one_store_backlogged,
                                          one_store_lost_sales, poisson_by_inversion)
from rlpost.control.inventory.hdpo import (HDPOConfig, HDPOResult, evaluate_test_cost, hdpo_loss,
                                           make_evaluate, rollout_costs, train_hdpo)
from rlpost.control.inventory.pg import PGConfig, greedy_policy, make_pg_train
from rlpost.control.inventory.policies import make_gnn_policy, make_mlp_policy
