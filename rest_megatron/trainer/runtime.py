"""Everything a training run holds: process groups, the actor, data, the run directory, services.

`start_runtime` builds it on every rank; the *driver* (global rank 0) additionally owns the run log,
the rollout servers and the sandbox service, and does the rollouts. `stop_runtime` undoes it.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from rest_megatron.config import Config, config_to_dict, save_config
from rest_megatron.convert.from_hf import load_hf_into_model
from rest_megatron.convert.hf_files import HFWeights
from rest_megatron.data.prompts import Prompt, PromptStream, drop_long_prompts, load_prompts
from rest_megatron.distributed import ParallelLayout, init_distributed, init_model_parallel
from rest_megatron.model.builder import ModelSpec, load_hf_config, model_spec_from_hf
from rest_megatron.rollout.chat import ChatRenderer, template_renders_tools
from rest_megatron.trainer.actor import PolicyActor, build_actor, build_reference
from rest_megatron.trainer.run_log import RunLogger

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from rest_megatron.trainer.rollout_stage import RolloutServices  # rollout_stage imports this module

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Runtime:
    """The live state of a run on one rank."""

    config: Config
    spec: ModelSpec
    hf_dir: Path
    """The Hugging Face folder the run started from (config, tokenizer; weights for the first sync)."""
    tokenizer: PreTrainedTokenizerBase
    actor: PolicyActor
    run_dir: Path
    train_prompts: PromptStream
    eval_prompts: PromptStream | None
    is_driver: bool
    device: torch.device
    """Where this rank computes: the model, micro-batches, losses and collectives
    (from `init_distributed`)."""
    logger: RunLogger | None = None
    services: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    rollout: RolloutServices | None = None
    """The driver's `rollout_stage.RolloutServices` (None on other ranks)."""
    reference: PolicyActor | None = None
    """The frozen reference policy (weights of `hf_dir`) when `algorithm.kl_coef` > 0, else None."""
    stop_requested: bool = False
    """Set by SIGTERM (Slurm preemption): save a checkpoint after the current step and exit."""


def resolve_model_dir(path: str) -> Path:
    """A HF directory, or the cached folder of a built-in tiny model."""
    from rest_megatron.assets import TINY_MODELS, tiny_model_dir

    return tiny_model_dir(path) if path in TINY_MODELS else Path(path)


def load_hf_weights(actor: PolicyActor, spec: ModelSpec, hf_dir: Path) -> None:
    """Fill the actor's model from a Hugging Face folder and make its optimizer train those weights.

    In bf16/fp16 the Megatron optimizer keeps fp32 main copies of the parameters, taken when it was
    built, and every step writes them back: without the re-sync the first update would turn the policy
    into the random initialisation.
    """
    load_hf_into_model(actor.network, spec, HFWeights.open(hf_dir, spec=spec))
    actor.optimizer.reload_model_params()


def start_runtime(config: Config) -> Runtime:
    """Initialize this rank: process groups, actor (weights from the HF folder), data, run directory."""
    from transformers import AutoTokenizer

    device = init_distributed(
        backend=config.launch.backend,
        device=config.launch.device,
        timeout_s=config.launch.collective_timeout_s,
    )
    layout = ParallelLayout(tp=config.parallel.tp, pp=config.parallel.pp)
    init_model_parallel(layout, seed=config.data.seed, timeout_s=config.launch.collective_timeout_s)
    hf_dir = resolve_model_dir(config.model.path)
    spec = model_spec_from_hf(load_hf_config(hf_dir))
    model_layout = dict(
        tp=layout.tp,
        pp=layout.pp,
        dtype=DTYPES[config.model.dtype],
        sequence_parallel=config.parallel.sequence_parallel,
        recompute=config.model.recompute_activations,
        padded_vocab_multiple=config.model.padded_vocab_multiple,
        megatron_overrides=config.model.megatron,
        temperature=config.rollout.temperature,
        device=device,
        transformer_impl=config.model.transformer_impl,
    )
    actor = build_actor(
        spec,
        config.optimizer,
        updates_per_step=config.num_updates_per_step,
        use_distributed_optimizer=config.parallel.use_distributed_optimizer,
        **model_layout,
    )
    load_hf_weights(actor, spec, hf_dir)
    # KL anchors the policy to the run's starting HF folder (before any SFT warm start), as verl's ref.
    reference = build_reference(spec, hf_dir, **model_layout) if config.algorithm.kl_coef > 0 else None
    data = config.data
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    renderer = ChatRenderer(tokenizer)

    def prompt_tokens(prompt: Prompt) -> int:
        return len(renderer.prompt_ids(prompt.messages, prompt.template_tools))

    kept, skipped = drop_long_prompts(
        load_prompts(data.train_path, "train", data.seed), prompt_tokens, data.max_prompt_tokens
    )
    if any(p.template_tools for p in kept) and not template_renders_tools(tokenizer):
        raise ValueError(
            f"the chat template of {hf_dir} drops the `tools` it is given, so the model would never "
            f"see the tools of {data.train_path}; use a model whose template renders tools (Qwen, "
            "Llama 3 instruct) or data whose system prompt lists them (records with render_tools: false)"
        )
    train = PromptStream(
        kept,
        batch_size=data.num_prompts_per_step,
        seed=data.seed,
        shuffle=data.shuffle,
        num_skipped_long=skipped,
    )
    evaluation = None
    if data.eval_path:
        held_out, skipped = drop_long_prompts(
            load_prompts(data.eval_path, "eval", data.seed), prompt_tokens, data.max_prompt_tokens
        )
        evaluation = PromptStream(
            held_out, batch_size=len(held_out), seed=data.seed, shuffle=False, num_skipped_long=skipped
        )
    run_dir = Path(config.logging.run_dir)
    is_driver = dist.get_rank() == 0
    runtime = Runtime(
        config=config,
        spec=spec,
        hf_dir=hf_dir,
        tokenizer=tokenizer,
        actor=actor,
        run_dir=run_dir,
        train_prompts=train,
        eval_prompts=evaluation,
        is_driver=is_driver,
        reference=reference,
        device=device,
    )
    if is_driver:
        save_config(config, run_dir)
        runtime.logger = RunLogger(
            run_dir, wandb_project=config.logging.wandb_project, config=config_to_dict(config)
        )

    def request_stop(signum: int, frame: Any) -> None:
        runtime.stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    dist.barrier()
    return runtime


def stop_runtime(runtime: Runtime) -> None:
    """Stop the services this rank started and leave the process groups."""
    runtime.services.close()
    if runtime.logger is not None:
        runtime.logger.close()
    if dist.is_initialized():
        dist.destroy_process_group()
