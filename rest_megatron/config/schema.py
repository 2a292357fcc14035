"""The typed shape of a rest-megatron run: frozen, keyword-only dataclasses, one per concern.

A recipe YAML mirrors this tree (`model.path`, `algorithm.weights`, ...). Every field carries a
docstring right after it, megatron-core style; `loading.py` type-checks YAML values against the
annotations here and `validation.py` checks what types alone cannot (divisibility, files, ranges).

Conventions:
- Required fields have no default (`model.path`, `data.train_path`, `optimizer.num_steps`).
- Counts are named `num_*`; durations end in `_s`/`_seconds`.
- `dict` fields (`model.megatron`, `rollout.sglang`, ...) are passed verbatim to the upstream tool;
  we never re-declare upstream flags. Treat them as read-only: the dataclasses are frozen, their
  dicts are not (a read-only mapping would not pickle into spawned ranks).
- A "step" is one training step: one rollout batch of `data.num_prompts_per_step` prompts ×
  `rollout.num_samples_per_prompt` samples, followed by one or more optimizer updates
  (`optimizer.mini_batch_size`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TINY_MODELS = ("tiny-qwen3", "tiny-qwen2", "tiny-llama")
"""Built-in tiny model names accepted by `model.path`; `rest_megatron.assets` builds them (one
family each) and imports this tuple rather than repeating it."""

TINY_DATASETS = ("tiny-task",)
"""Built-in synthetic data set names accepted by `data.train_path` / `data.eval_path`."""

DEFAULT_RUN_DIR = "runs/{recipe}-{timestamp}"
"""Default `logging.run_dir`; `{recipe}` and `{timestamp}` are filled in by `load_config`."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The policy model and how Megatron builds it."""

    path: str
    """A local Hugging Face model directory (with config.json and the tokenizer files), or one of
    the built-in tiny models `tiny-qwen3`, `tiny-qwen2`, `tiny-llama`."""

    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    """Parameter and compute dtype of the trained model. Use float32 on CPU."""

    padded_vocab_multiple: int = 128
    """The vocabulary is padded to a multiple of this × `parallel.tp` (Megatron's
    `make_vocab_size_divisible_by`)."""

    recompute_activations: bool = False
    """Recompute each transformer layer's activations in backward to save memory."""

    transformer_impl: Literal["auto", "transformer_engine", "local"] = "auto"
    """Megatron layer implementation (read by `model/builder.py`): `transformer_engine` (fused kernels,
    flash attention, THD packing; needs CUDA and the `gpu` extra), `local` (Megatron's plain PyTorch
    layers, the CPU path), or `auto`: Transformer Engine when a GPU is visible, local otherwise. A missing
    or broken Transformer Engine is an error whenever it is chosen, never a silent fallback."""

    megatron: dict[str, Any] = field(default_factory=dict)
    """Extra `TransformerConfig` keyword arguments, passed through verbatim (e.g.
    `{attention_dropout: 0.0}`). They override what the model builder derives from config.json."""


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """How the trainer ranks are laid out (Megatron model parallelism)."""

    tp: int = 1
    """Tensor-parallel size. Must divide the attention heads and the KV (query) groups."""

    pp: int = 1
    """Pipeline-parallel size. Must divide the number of layers."""

    dp: int = 0
    """Data-parallel size; 0 derives it as world size / (tp × pp)."""

    sequence_parallel: bool = False
    """Megatron sequence parallelism (needs tp > 1 and a GPU; the CPU layer spec refuses it)."""

    use_distributed_optimizer: bool = False
    """Shard optimizer state across data-parallel ranks (Megatron's distributed optimizer)."""

    micro_batch_size: int = 1
    """Trajectories per forward/backward micro-batch on each data-parallel rank."""

    pack_sequences: bool = False
    """Pack trajectories back to back into rows of `micro_batch_size` × the step's longest trajectory
    instead of padding each one (THD with Transformer Engine on GPU, a block-diagonal causal mask on
    CPU). Needs a token-level `algorithm.aggregation` (token-mean-weighted or token-mean)."""


@dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """How trajectories are generated: the inference engine and the multi-turn agent loop."""

    engine: Literal["embedded", "sglang", "vllm"] = "embedded"
    """Inference backend. `embedded` is our CPU HTTP server (Hugging Face transformers); `sglang` and
    `vllm` launch (or connect to) GPU servers."""

    server_urls: tuple[str, ...] = ()
    """Base URLs of already-running inference servers (e.g. started by the Slurm script). Empty:
    launch `num_servers` servers ourselves."""

    num_servers: int = 1
    """Inference servers to launch when `server_urls` is empty."""

    server_tp: int = 1
    """Tensor-parallel size inside each inference server."""

    num_samples_per_prompt: int = 8
    """Group size n: trajectories sampled per prompt, normalized together for the advantage."""

    temperature: float = 1.0
    """Sampling temperature (> 0: the loss needs real sampling log-probs)."""

    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]."""

    top_k: int = -1
    """Top-k sampling; -1 disables it."""

    max_new_tokens: int = 512
    """Tokens one assistant turn may generate."""

    max_turns: int = 4
    """Assistant turns per trajectory (each may call tools, whose results start the next turn)."""

    request_timeout_s: float = 600.0
    """Timeout of one generation request to an inference server."""

    share_trainer_gpus: bool = False
    """Servers the trainer starts itself (no `server_urls`) go on the trainer's own GPUs instead of the
    ones after them (`rollout/launch.py` `gpu_placement`): for a single-GPU machine. Leave the trainer
    room with `sglang: {mem_fraction_static: ...}`. Off, servers that do not fit beside the trainer are
    refused."""

    deterministic: bool = False
    """Exact replay of sampling: the SGLang servers we launch (trainer or `slurm/train.sbatch`) get
    `--enable-deterministic-inference`, under which SGLang honours each request's `sampling_seed` and
    batch-invariant kernels make a resumed run redo the very samples of the uninterrupted one. Off,
    SGLang ignores the seed and a resume samples anew. The embedded engine is deterministic either
    way; vLLM is refused (it has no such server mode here). Servers in `server_urls` that you start
    yourself need the flag too: `rest-megatron serve-command RECIPE` prints their command line."""

    weight_sync: Literal["disk", "distributed", "auto"] = "auto"
    """How each step's new weights reach the servers (`trainer/rollout_stage.py`): `disk` writes a
    Hugging Face folder that every server loads; `distributed` broadcasts them in buckets from the
    trainer's rank 0 to every server through one process group (NCCL with SGLang or vLLM on GPU,
    gloo with the embedded engine and vLLM on CPU); `auto` is `distributed` for the servers the
    trainer starts itself and `disk` for `server_urls` (`rollout/weight_sync.py` `resolve_weight_sync`
    says why); set `distributed` for given servers that can reach the trainer's rank 0. A server that is
    down misses a distributed update (it stays out of rotation); with `disk` it catches up when it
    returns."""

    weight_sync_bucket_mb: float = 512.0
    """Megabytes per broadcast bucket of the distributed weight sync (`rollout/weight_sync.py`)."""

    max_failed_fraction: float = 0.25
    """Trajectories that failed or were aborted are masked out of the loss; a step where more than
    this fraction of them did stops the run with the first failure's reason (`trainer/rollout_stage.py`
    `rollout_status_metrics`)."""

    sglang: dict[str, Any] = field(default_factory=dict)
    """SGLang server arguments, passed verbatim as flags (`mem_fraction_static: 0.7` becomes
    `--mem-fraction-static 0.7`)."""

    vllm: dict[str, Any] = field(default_factory=dict)
    """vLLM server arguments, passed verbatim as flags. `--tensor-parallel-size` (from `server_tp`)
    and `--logprobs-mode` (from temperature / top-p / top-k: the mode whose log-probs equal the
    trainer's, see `rollout/server_commands.py` `vllm_logprobs_mode`) are set by the launcher."""

    vllm_python: str | None = None
    """Interpreter that runs the vLLM servers the trainer launches (`rollout/server_commands.py`
    `vllm_python`); null: the repository's `.venv-vllm` (scripts/setup_vllm.sh) if it exists, else
    the trainer's own Python."""


@dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    """The policy-gradient objective: ResT token weights, policy loss, aggregation, advantages."""

    weights: str = "paper"
    """Name of a registered token-weight scheme (`algo/weights.py`; docs/design.md §4): `paper` region
    curricula, `entropy` inverse gradient variance, `hybrid` their product, `uniform` plain GRPO."""

    weights_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the chosen weight function (e.g. region γ values, α curriculum)."""

    policy_loss: str = "ppo_clip"
    """Name of a registered policy loss (`algo/policy_loss.py`)."""

    clip_low: float = 0.2
    """PPO lower clip ε_low: ratios below 1 − ε_low stop contributing gradient."""

    clip_high: float = 0.2
    """PPO upper clip ε_high: ratios above 1 + ε_high stop contributing gradient."""

    dual_clip: float | None = 3.0
    """Dual-clip constant c (> 1) bounding the loss of negative-advantage tokens; null disables it."""

    kl_coef: float = 0.0
    """Weight of the KL penalty against a frozen reference policy holding the weights of `model.path`
    (`trainer/runtime.py` builds it, `trainer/actor.py` `build_reference`); 0 skips the reference model
    and its forward pass. Needs sft.num_steps = 0 (the reference is the model RL starts from)."""

    kl_estimator: str = "k3"
    """Name of a registered KL estimator (`algo/policy_loss.py`: Schulman's k1, k2, or the
    non-negative k3)."""

    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""

    aggregation: str = "token-mean-weighted"
    """Name of a registered aggregation (`algo/aggregation.py`): how per-token losses become one
    scalar. `token-mean-weighted` divides Σ m·w·L by Σ m·w over
    the whole optimizer step; `per-microbatch` reproduces the authors' code."""

    advantage: str = "grpo"
    """Name of a registered advantage estimator (`algo/advantages.py`) over each prompt's group of
    samples."""

    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal (they carry no gradient)."""


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """The rule-based reward computed per trajectory."""

    name: str = "toolrl"
    """Name of a registered reward function."""

    params: dict[str, Any] = field(default_factory=dict)
    """Extra keyword parameters of the reward function."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where prompts come from and how long they may be."""

    train_path: str
    """Training prompts: a JSONL file, or the built-in synthetic `tiny-task`."""

    eval_path: str | None = None
    """Evaluation prompts (same forms as `train_path`); null disables evaluation."""

    num_prompts_per_step: int = 32
    """Prompts per training step; the rollout batch is this × `rollout.num_samples_per_prompt`."""

    max_prompt_tokens: int = 2048
    """Longer prompts are skipped (not truncated: a cut tool schema is a wrong task)."""

    max_response_tokens: int = 2048
    """Cap on a trajectory's tokens after the prompt, all turns and tool results included."""

    shuffle: bool = True
    """Shuffle the prompts each epoch."""

    seed: int = 1234
    """Seed of prompt order and sampling; the run is reproducible given it."""


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Adam and its learning-rate schedule."""

    num_steps: int
    """Training steps (rollout batches) to run."""

    lr: float = 1e-6
    """Peak learning rate."""

    min_lr: float = 0.0
    """Final learning rate of the cosine schedule."""

    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate shape after warmup."""

    num_warmup_steps: int = 0
    """Optimizer updates of linear warmup from 0 to `lr`."""

    weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay."""

    adam_beta1: float = 0.9
    """Adam β1."""

    adam_beta2: float = 0.999
    """Adam β2."""

    adam_eps: float = 1e-8
    """Adam ε."""

    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables it."""

    mini_batch_size: int | None = None
    """Trajectories per optimizer update: the trainer (`trainer/stages.py` `plan_updates`) shuffles the
    step's trajectories with a seed from (data.seed, step) and splits them into batch / this updates;
    each update has its own loss denominator. null: one update per step (fully on-policy)."""

    ppo_epochs: int = 1
    """Passes over the step's mini-batches (the same split each pass), each pass making batch /
    mini_batch_size updates; old log-probs are computed once, before the first update."""


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Distributed checkpoints: where, how often, and what to resume from."""

    dir: str | None = None
    """Checkpoint directory; null means `<logging.run_dir>/checkpoints`."""

    save_interval: int = 0
    """Save every this many steps; 0 saves only at the end."""

    resume: str = "auto"
    """`auto` resumes from the latest checkpoint in `dir` if there is one, `never` starts fresh, and
    any other value is a checkpoint path to resume from."""

    num_keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted); 0 keeps all."""


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """The run directory, metrics and evaluation cadence."""

    run_dir: str = DEFAULT_RUN_DIR
    """Run directory (metrics, resolved config, checkpoints). `{recipe}` and `{timestamp}` are
    filled in at load time; relative paths are relative to the working directory."""

    log_interval: int = 1
    """Print and record metrics every this many steps (`trainer/loop.py` `log`); steps with an
    evaluation and the last step are always recorded."""

    eval_interval: int = 0
    """Evaluate on `data.eval_path` every this many RL steps and after the last one; with 0, only once,
    before the first RL step (after any SFT warm start). Null `data.eval_path` turns evaluation off."""

    wandb_project: str | None = None
    """Weights & Biases project; null disables wandb."""

    save_rollouts: bool = False
    """Write every step's trajectories to the run directory, so a step can be replayed."""


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """The tool-execution sandbox (tools_sandbox) and its per-call limits."""

    url: str | None = None
    """Base URL of a running sandbox service; null starts a local one."""

    secret_env: str = "TOOLS_SANDBOX_SECRET"
    """Environment variable holding the shared secret sent to `url` (a service started with
    `--secret-env`); unset or empty sends none. The secret itself never goes in a recipe."""

    backend: Literal["auto", "bubblewrap", "nsjail", "rlimit"] = "auto"
    """Isolation backend; `auto` picks the strongest available (rlimit is the weak fallback)."""

    cpu_seconds: float = 10.0
    """CPU-time limit of one tool call."""

    wall_seconds: float = 30.0
    """Wall-clock limit of one tool call; the whole process tree is killed at the limit."""

    memory_mb: int = 1024
    """Address-space limit of one tool call."""

    max_processes: int = 64
    """Process (thread) limit of one tool call."""

    max_file_mb: int = 64
    """Largest file a tool call may write."""

    max_output_bytes: int = 65536
    """Stdout/stderr kept per call; the rest is truncated (the model sees a marker)."""

    max_concurrency: int = 16
    """Tool calls executed at once by the local service."""


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    """Process layout of the trainer and its distributed backend."""

    nnodes: int = 1
    """Trainer nodes."""

    nproc_per_node: int = 1
    """Trainer processes (ranks) per node; world size is `nnodes × nproc_per_node`."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Trainer device; `auto` uses CUDA when available."""

    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend; `auto` is nccl on CUDA and gloo on CPU."""

    collective_timeout_s: float = 600.0
    """Timeout of one collective, so a hung rank fails the job instead of stalling it."""


@dataclass(frozen=True, kw_only=True)
class SFTConfig:
    """Supervised warm start on gold demonstrations before RL, so RL starts from well-formed calls."""

    num_steps: int = 0
    """Optimizer steps of the SFT stage; 0 skips it."""

    lr: float = 3.0e-3
    """Peak learning rate of the SFT stage (cosine decay, 5 warmup steps)."""

    num_samples: int = 256
    """Gold demonstrations generated from the task's training split (the pool steps draw from)."""

    micro_batch_size: int = 4
    """Conversations per optimizer step and data-parallel rank."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """One complete run. Build it with `load_config`, never by hand-editing a dump."""

    model: ModelConfig
    """The policy model."""

    data: DataConfig
    """Prompts and length limits."""

    optimizer: OptimizerConfig
    """Optimizer and learning-rate schedule."""

    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Megatron parallel layout."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    """Optional supervised warm start before RL."""

    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Trajectory generation."""

    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    """ResT weights and the policy-gradient loss."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward function."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing and resumption."""

    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Run directory, metrics, evaluation cadence."""

    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Tool-execution sandbox."""

    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """Trainer process layout."""

    @property
    def world_size(self) -> int:
        """Trainer ranks the launch section asks for."""
        return self.launch.nnodes * self.launch.nproc_per_node

    def data_parallel_size(self, world_size: int | None = None) -> int:
        """`parallel.dp`, or world size / (tp × pp) when it is 0."""
        if self.parallel.dp:
            return self.parallel.dp
        world = self.world_size if world_size is None else world_size
        return world // (self.parallel.tp * self.parallel.pp)

    @property
    def rollout_batch_size(self) -> int:
        """Trajectories generated per training step."""
        return self.data.num_prompts_per_step * self.rollout.num_samples_per_prompt

    @property
    def num_updates_per_step(self) -> int:
        """Optimizer updates per training step: (rollout batch / mini-batch) × ppo_epochs. The LR schedule's
        horizon counts these (`trainer/runtime.py`)."""
        mini = self.optimizer.mini_batch_size or self.rollout_batch_size
        return self.rollout_batch_size // mini * self.optimizer.ppo_epochs
