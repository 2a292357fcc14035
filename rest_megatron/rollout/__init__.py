"""Rollout: token-in/token-out generation, the multi-turn agent loop, servers and weight sync.

    agent_loop.py   AgentLoop: many trajectories in flight, tools run concurrently, no turn barrier
    trajectory.py   Trajectory: token ids, sampling logprobs, loss mask, regions (one append method);
                    JSONL replay
    chat.py         chat-template rendering: the prompt once, then tool turns as suffixes (never re-tokenized)
    tools.py        one assistant turn's tool calls -> tool messages (errors become text for the model)
    types.py        SamplingParams, Generation, and the errors clients raise
    clients/        SGLang (/generate), vLLM (/v1/completions), the router over N servers
    engine/         the embedded CPU engine (continuous batching, prefix cache, gloo weight updates)
                    behind SGLang's API
    embedded_server.py  `rest-megatron rollout-server`
    server_commands.py  the command line of each engine's server, built from the recipe
    launch.py       start / health-wait / stop those servers; their GPUs beside the trainer's
    weight_sync.py  weights to the servers after each step: from disk, or broadcast buckets (NCCL or gloo)
    vllm_worker.py  the vLLM worker extension that receives broadcast weights (behind /collective_rpc)

Protocols: docs/design.md §7. Sampling logprobs follow SGLang: log softmax of the temperature-scaled
logits (raw at temperature 1); see `engine/sampling.py`.
"""
