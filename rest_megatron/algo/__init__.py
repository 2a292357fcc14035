"""ResT's algorithm as pure functions of tensors, each variant registered by name (docs/design.md §4, §6).

| module | registry | what |
|---|---|---|
| `regions.py` | | Region ids and bitmask helpers shared by the tagger and the weights |
| `region_tagger.py` | | token-ID region tagging of assistant turns |
| `curricula.py` | | step schedules: constant, linear, cosine; spec parsing |
| `weights.py` | `get_token_weights` | ResT token weights: paper, entropy, hybrid, uniform |
| `policy_loss.py` | `get_policy_loss` | per-token PPO-clip loss (+KL, entropy bonus), `valid_mask` |
| `aggregation.py` | `get_aggregation` | token-mean-weighted with one step-wide denominator, and others |
| `advantages.py` | `get_advantage` | GRPO, Dr.GRPO, RLOO, dynamic-sampling filter |
| `tool_calls.py` | | Qwen/Hermes tool-call parsing (shared with the rollout) |
| `function_match.py` | | structural comparison of tool calls |
| `rewards.py` | `get_reward` | ToolRL rule reward, function match, answer match |

Nothing is imported here, so `import rest_megatron.algo.weights` does not pull in the rewards.
"""
