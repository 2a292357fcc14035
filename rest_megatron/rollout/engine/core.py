"""The embedded engine's model loop: continuous batching of token-in/token-out requests on CPU.

One worker thread owns the model. Each iteration it
1. admits queued requests (up to `max_running`) and prefills each one, reusing the KV of the
   longest cached prefix (`PrefixCache`) so multi-turn histories are not recomputed;
2. runs one decode step for every running request, each its own forward on its own KV cache, so a
   request's tokens do not depend on the other requests in flight (batch invariance);
3. samples each row with its own settings and generator, and finishes requests that hit a stop
   token, a stop string, `max_new_tokens` or the context length.
New requests join at the next step (no waiting for a batch to drain), and the HTTP event loop never
runs model code, so `/health` answers while the model works.

Commands (weight updates, cache flushes) go through the same queue: requests queued before a command
finish on the old weights, requests after it start on the new ones (SGLang's update lock does the
same), and the prefix cache is cleared with every weight change.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import DynamicCache

from rest_megatron.rollout.engine.prefix_cache import LayerKV, PrefixCache
from rest_megatron.rollout.engine.sampling import RowSampling, sample_row

log = logging.getLogger(__name__)


@dataclass(eq=False)
class EngineRequest:
    """One generation request and its state while it runs."""

    input_ids: list[int]
    sampling: RowSampling
    max_new_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    ignore_eos: bool = False
    top_logprobs_num: int = 0
    rid: str = ""
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish: dict[str, Any] | None = None
    """SGLang-style finish reason: {"type": "stop", "matched": id or str} / {"type": "length", ...}."""
    aborted: bool = False
    """Set from another thread when the client went away; the worker drops the request."""
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    kv: LayerKV | None = None
    cached_tokens: int = 0
    weight_version: str = ""

    @property
    def kv_length(self) -> int:
        return self.kv[0][0].shape[2] if self.kv else 0


class EngineCore:
    """A Hugging Face causal LM behind a request queue and a worker thread."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        max_running: int = 32,
        prefix_cache_tokens: int = 32768,
    ) -> None:
        self.model_path = str(model_path)
        self.dtype = dtype
        self.max_running = max_running
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
        self.model = self._load(self.model_path)
        self.eos_ids = self._eos_ids()
        self._cache_kw = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        )
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 1 << 30))
        self.weight_version = "0"
        self.prefix_cache = PrefixCache(prefix_cache_tokens)
        self._queue: queue.Queue = queue.Queue()
        self._running: list[EngineRequest] = []
        self._held_command: tuple[Callable[[], Any], concurrent.futures.Future] | None = None
        self._stop = threading.Event()
        self._rids = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.num_decode_steps = 0
        self.num_decode_rows = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_queued(self) -> int:
        return self._queue.qsize()

    # ---- API used by the HTTP layer (any thread) ------------------------------------------
    def validate(self, request: EngineRequest) -> None:
        """Raise ValueError (with the fix) if the engine cannot serve `request`."""
        if not request.input_ids:
            raise ValueError("input_ids is empty; send at least one prompt token")
        if len(request.input_ids) >= self.max_context:
            raise ValueError(
                f"the prompt has {len(request.input_ids)} tokens, the model's context is {self.max_context}; "
                "shorten the prompt or lower the trajectory's token cap"
            )
        vocab = self.model.config.vocab_size
        if min(request.input_ids) < 0 or max(request.input_ids) >= vocab:
            raise ValueError(f"input_ids must be token ids in [0, {vocab}); got one outside it")

    def submit(self, request: EngineRequest) -> concurrent.futures.Future:
        """Validate and queue a request; its future resolves to the finished request."""
        self.validate(request)
        request.rid = request.rid or f"req-{next(self._rids)}"
        self._queue.put(request)
        return request.future

    def run_command(self, command: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `command()` on the worker thread once the requests queued before it have finished."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((command, future))
        return future

    def update_weights_from_disk(self, model_path: str, weight_version: str | None = None) -> str:
        """(worker thread) Load new weights of the same architecture; returns a message."""
        model = self._load(model_path)
        old, new = self.model.config, model.config
        for attr in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_key_value_heads"):
            if getattr(old, attr, None) != getattr(new, attr, None):
                raise ValueError(
                    f"{model_path} has {attr}={getattr(new, attr, None)}, the served model has "
                    f"{getattr(old, attr, None)}; weight updates must keep the architecture"
                )
        self.model, self.model_path = model, str(model_path)
        self.weights_changed(weight_version)
        return f"loaded {model_path} (weight version {self.weight_version})"

    def weights_changed(self, weight_version: str | None = None) -> None:
        """(worker thread) After new weights are in place: drop the stale KV prefixes, set the version
        every later answer carries (`weight_version`, or the old one plus one)."""
        self.prefix_cache.clear()
        self.weight_version = weight_version or str(
            int(self.weight_version) + 1 if self.weight_version.isdigit() else 1
        )

    # ---- model helpers (worker thread) ----------------------------------------------------
    def _load(self, path: str) -> torch.nn.Module:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        model.eval()
        return model

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config, self.model.config):
            eos = getattr(source, "eos_token_id", None)
            ids.update([eos] if isinstance(eos, int) else eos or [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return frozenset(ids)

    def _forward(
        self, input_ids: torch.Tensor, kv: LayerKV | None, **kwargs: Any
    ) -> tuple[torch.Tensor, LayerKV]:
        """Logits [B, T', V] and the full KV after running `input_ids` on top of `kv`."""
        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        # transformers 5.2x renamed `past_key_values` to `cache`; accept both spellings.
        out = self.model(input_ids=input_ids, use_cache=True, **{self._cache_kw: cache}, **kwargs)
        new = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        return out.logits, [(layer.keys, layer.values) for layer in new.layers]

    @torch.inference_mode()
    def _prefill(self, request: EngineRequest) -> torch.Tensor:
        """Run the prompt (minus any cached prefix); returns the last position's logits [V]."""
        ids = request.input_ids
        start, kv = self.prefix_cache.lookup(ids)
        request.cached_tokens = start
        logits, request.kv = self._forward(torch.tensor([ids[start:]]), kv, logits_to_keep=1)
        self.prefix_cache.insert(ids, request.kv)
        return logits[0, -1].float()

    @torch.inference_mode()
    def _decode(self, batch: list[EngineRequest]) -> torch.Tensor:
        """One token for every request in `batch`, one forward per request. Returns logits [B, V].

        Per request, not batched: a batched forward's matmul and attention shapes (rows, padded KV
        length) depend on what else is running, and CPU kernels round differently by shape, so the
        same request with the same seed could sample different tokens depending on the batch or the
        arrival order. Each request's forward here has shapes that depend on that request alone.
        """
        rows = []
        for request in batch:
            logits, request.kv = self._forward(torch.tensor([[request.output_ids[-1]]]), request.kv)
            rows.append(logits[0, -1].float())
        self.num_decode_steps += 1
        self.num_decode_rows += len(batch)
        return torch.stack(rows)

    # ---- per-token bookkeeping ------------------------------------------------------------
    def _accept(self, request: EngineRequest, logits: torch.Tensor) -> None:
        token, logprob, reported = sample_row(logits, request.sampling)
        request.output_ids.append(token)
        request.logprobs.append(logprob)
        if request.top_logprobs_num > 0:
            values, ids = reported.topk(request.top_logprobs_num)
            request.top_logprobs.append(list(zip(ids.tolist(), values.tolist())))
        if token in request.stop_token_ids or (token in self.eos_ids and not request.ignore_eos):
            request.finish = {"type": "stop", "matched": token}
        elif request.stop_strings and (matched := self._stop_string(request)) is not None:
            request.finish = {"type": "stop", "matched": matched}
        elif len(request.output_ids) >= request.max_new_tokens:
            request.finish = {"type": "length", "length": len(request.output_ids)}
        elif len(request.input_ids) + len(request.output_ids) >= self.max_context:
            request.finish = {"type": "length", "length": len(request.output_ids)}

    def _stop_string(self, request: EngineRequest) -> str | None:
        text = self.tokenizer.decode(request.output_ids, skip_special_tokens=False)
        return next((s for s in request.stop_strings if s in text), None)

    def _complete(self, request: EngineRequest) -> None:
        if request.kv is not None and request.finish and request.finish["type"] != "abort":
            # The KV covers the prompt and every output token but the last (never fed back).
            self.prefix_cache.insert(request.input_ids + request.output_ids[:-1], request.kv)
        request.kv = None
        request.weight_version = self.weight_version
        if not request.future.done():
            request.future.set_result(request)

    def _fail(self, requests: list[EngineRequest], exc: BaseException) -> None:
        log.exception("engine step failed for %d request(s)", len(requests), exc_info=exc)
        for request in requests:
            request.kv = None
            if not request.future.done():
                request.future.set_exception(exc)

    # ---- the worker loop ------------------------------------------------------------------
    def _admit(self) -> list[EngineRequest]:
        """New requests to start now; holds a command back until the running ones are done."""
        admitted: list[EngineRequest] = []
        while self._held_command is None and len(self._running) + len(admitted) < self.max_running:
            try:
                block = not self._running and not admitted
                item = self._queue.get(timeout=0.05) if block else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                self._held_command = item
            elif item.aborted:
                item.finish = {"type": "abort", "message": "client went away"}
                self._complete(item)
            else:
                admitted.append(item)
        return admitted

    def _run_held_command(self) -> None:
        if self._held_command is None or self._running:
            return
        command, future = self._held_command
        self._held_command = None
        try:
            future.set_result(command())
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the engine keeps serving
            future.set_exception(exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for request in self._admit():
                try:
                    self._accept(request, self._prefill(request))
                except Exception as exc:  # noqa: BLE001 - fail this request, keep serving others
                    self._fail([request], exc)
                    continue
                self._running.append(request)
            for request in self._running:
                if request.aborted and request.finish is None:
                    request.finish = {"type": "abort", "message": "client went away"}
            done = [r for r in self._running if r.finish is not None]
            self._running = [r for r in self._running if r.finish is None]
            for request in done:
                self._complete(request)
            if self._running:
                batch = list(self._running)
                try:
                    logits = self._decode(batch)
                except Exception as exc:  # noqa: BLE001
                    self._running = []
                    self._fail(batch, exc)
                    continue
                for row, request in enumerate(batch):
                    self._accept(request, logits[row])
            self._run_held_command()
        for request in self._running:
            self._fail([request], RuntimeError("the engine is shutting down"))
