"""Text generation with ``tiny-lm``: sampling, and a continuous-batching decode engine.

:class:`Engine` keeps up to ``max_batch`` sequences *active*; each decode step is ONE model
call over all of them (a ``[active, CONTEXT_WINDOW]`` batch: sequences at different positions
decode together, the fixed window makes that simple), then samples each sequence's next token
and hands it to that sequence's :class:`Generation`. Further requests *wait* in a FIFO queue
and join the batch as soon as a sequence finishes and frees a slot, between two steps. The
model call and the sampling run on a decode thread (the engine's own, or the executor given),
never on the event loop. The engine records nothing itself: ``on_step``, ``steps``,
``waiting``, ``active`` and each generation's counts are there for the caller's telemetry.

Sampling (:class:`SamplingParams`): temperature 0 is greedy (argmax); above 0 the softmax of
``logits / temperature`` is sampled with the request's own ``numpy.random.Generator`` seeded
from ``seed``, one draw per token, so a seeded request gives the same text whatever else is
batched with it. A generation ends with finish reason ``"stop"`` (the end-of-sequence token,
or a stop sequence matched) or ``"length"`` (``max_tokens`` tokens generated). As in the
OpenAI API, a matched stop sequence is not part of the text; while a generation runs, only
the characters that could still begin a stop sequence are held back.

Prompts: token ids of :data:`~demo_service.textgen_model.TOKENIZER`, at most
:data:`MAX_PROMPT_CHARS` of them (one per character). The model reads only the last
:data:`~demo_service.textgen_model.CONTEXT_WINDOW` tokens of prompt plus generated text, so a
longer prompt is in effect truncated to its last 32 tokens (``prompt_tokens`` still counts it
all). An empty prompt starts from the end-of-sequence token alone.

``python -m demo_service.textgen --bench`` measures a decode step at batch 1 and 8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from demo_service.config import DemoSettings
from demo_service.textgen_model import (
    ALPHABET,
    CONTEXT_WINDOW,
    DEFAULT_THREADS,
    DEFAULT_VERSION,
    EOS_ID,
    TOKENIZER,
    load,
    window,
)

MAX_PROMPT_CHARS = 4096
"""Longest prompt, in characters (= tokens); the endpoint answers longer ones 400."""
MIN_MAX_TOKENS = 1
MAX_MAX_TOKENS = 512
"""``max_tokens`` must lie in ``MIN_MAX_TOKENS..MAX_MAX_TOKENS``."""
MIN_TEMPERATURE = 0.0
MAX_TEMPERATURE = 2.0
"""``temperature`` must be finite and lie in ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``."""
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
"""At most ``MAX_STOP_SEQUENCES`` stop sequences, each 1 to ``MAX_STOP_CHARS`` characters."""
DEFAULT_MAX_BATCH = 8

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
"""Set by :meth:`Generation.cancel` (the caller went away); never sent to a client."""

StepCallback = Callable[[int, float], None]
"""``on_step(batch_size, seconds)``: after each decode step, on the event loop."""

_log = logging.getLogger("demo_service.textgen")


class EngineStopped(RuntimeError):
    """The engine is not running, or stopped before the generation finished (map it to 503)."""


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; the constructor checks every field (``ValueError`` naming it).

    ``stop`` may also be given as one string or a list; it is kept as a tuple. ``seed`` may be
    any integer (reduced modulo 2**64 for NumPy); ``None`` draws fresh entropy, so the text is
    not reproducible (greedy decoding never uses the generator).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ValueError(f"max_tokens must be an integer, not {self.max_tokens!r}")
        if not MIN_MAX_TOKENS <= self.max_tokens <= MAX_MAX_TOKENS:
            raise ValueError(
                f"max_tokens must be {MIN_MAX_TOKENS} to {MAX_MAX_TOKENS}, not {self.max_tokens}"
            )
        temperature = self.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"temperature must be a number, not {temperature!r}")
        if not (math.isfinite(temperature) and MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):
            raise ValueError(
                f"temperature must be {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, "
                f"not {temperature!r}"
            )
        object.__setattr__(self, "temperature", float(temperature))
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer or None, not {self.seed!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"stop: at most {MAX_STOP_SEQUENCES} sequences, not {len(stop)}")
        for sequence in stop:
            if not isinstance(sequence, str) or not 1 <= len(sequence) <= MAX_STOP_CHARS:
                raise ValueError(
                    f"stop: each sequence must be a string of 1 to {MAX_STOP_CHARS} "
                    f"characters, not {sequence!r}"
                )
        object.__setattr__(self, "stop", stop)

    def generator(self) -> np.random.Generator | None:
        """The request's random generator: ``None`` when greedy."""
        if self.temperature == 0.0:
            return None
        return np.random.default_rng(None if self.seed is None else self.seed % 2**64)


def check_prompt(prompt_ids: Sequence[int]) -> list[int]:
    """``prompt_ids`` as a list, checked: at most :data:`MAX_PROMPT_CHARS` ids, each a
    character or the end-of-sequence id (``ValueError`` otherwise)."""
    ids = [int(token) for token in prompt_ids]
    if len(ids) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt: at most {MAX_PROMPT_CHARS} tokens, not {len(ids)}")
    if any(not 0 <= token <= EOS_ID for token in ids):
        raise ValueError(f"prompt: token ids must be 0 to {EOS_ID}")
    return ids


# --- one decode step (on the decode thread) ---------------------------------------------------


class TextModel(Protocol):
    """What the engine needs of a model: :class:`~demo_service.textgen_model.LoadedTextModel`."""

    def logits(self, ids: np.ndarray) -> np.ndarray: ...


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator | None) -> int:
    """The next token from one row of logits: argmax when ``temperature`` is 0, else a draw
    (one ``rng.random()``) from the softmax of ``logits / temperature``. Padding is never
    drawn."""
    usable = logits[: EOS_ID + 1].astype(np.float64)
    if temperature == 0.0 or rng is None:
        return int(np.argmax(usable))
    weights = np.exp((usable - usable.max()) / temperature)
    cumulative = np.cumsum(weights)
    token = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(token, EOS_ID)


def decode_step(
    model: TextModel,
    inputs: np.ndarray,
    samplers: Sequence[tuple[float, np.random.Generator | None]],
) -> tuple[list[int], float]:
    """One step for a batch: one model call over ``inputs`` (``[batch, CONTEXT_WINDOW]``), a
    token sampled per row with that row's ``(temperature, generator)``; and the seconds it
    took."""
    started = time.perf_counter()
    logits = model.logits(inputs)
    tokens = [
        sample(row, temperature, rng)
        for row, (temperature, rng) in zip(logits, samplers, strict=True)
    ]
    return tokens, time.perf_counter() - started


# --- the engine -------------------------------------------------------------------------------


class Generation:
    """One request's generation: an async iterator of text pieces.

    It yields exactly one piece per generated token, in order: the text that token releases.
    A piece is ``""`` while its character is held back (it could begin a stop sequence), and
    for the end-of-sequence token unless held-back text is released with it; the piece of the
    last token also carries any held-back text that turned out not to be a stop sequence.
    ``"".join(pieces)`` is the completion (:attr:`text`), stop sequence excluded.

    Iteration ends when the generation finishes (:attr:`finish_reason` ``"stop"`` or
    ``"length"``) or is cancelled (``"cancelled"``); it raises :class:`EngineStopped` when
    the engine stops first, or the model's exception if a step failed (``finish_reason``
    stays ``None`` then). Pieces already produced are yielded before either.

    :attr:`completion_tokens` counts the tokens sampled for it, the end-of-sequence token
    included (each is one step of work); :attr:`prompt_tokens` the prompt's tokens, all of
    them; :attr:`queue_seconds` is the time from :meth:`Engine.submit` until it joined the
    batch (``None`` until then).
    """

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams) -> None:
        self.params = params
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.queue_seconds: float | None = None
        self.text = ""
        """The text released so far."""
        self.submitted = time.perf_counter()
        self._engine = engine
        self._context = (prompt_ids or [EOS_ID])[-CONTEXT_WINDOW:]
        self._sampler = (params.temperature, params.generator())
        self._pending = ""
        self._pieces: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self._removed = asyncio.Event()
        self._cancelled = False
        self._ended = False
        """The end (or an exception) was handed to the caller: iteration is over."""

    # The caller's side.

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> str:
        if self._ended or self._cancelled:
            raise StopAsyncIteration
        item = await self._pieces.get()
        if item is None or self._cancelled:
            self._ended = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        return item

    async def collect(self) -> str:
        """Consume the remaining pieces and return the whole text (non-streaming use): the
        completion, or what was released before a cancel. Raises as iteration does."""
        async for _ in self:
            pass
        return self.text

    @property
    def done(self) -> bool:
        """Out of the engine: finished, cancelled or failed."""
        return self._removed.is_set()

    def cancel(self) -> None:
        """Stop generating: a waiting generation leaves the queue now, an active one leaves
        the batch before the next step (a token from a step already running is dropped).
        Iteration ends. Nothing happens if it is already done."""
        if self._removed.is_set() or self._cancelled:
            return
        self._cancelled = True
        self.finish_reason = FINISH_CANCELLED
        self._pieces.put_nowait(None)
        self._engine._cancelled(self)

    async def aclose(self) -> None:
        """:meth:`cancel`, then wait until the engine has dropped it (at most one step)."""
        self.cancel()
        await self._removed.wait()

    # The engine's side (on the event loop).

    def _window(self) -> np.ndarray:
        return window(self._context)

    def _accept(self, token: int) -> bool:
        """Take the step's token; True when that finished the generation."""
        self.completion_tokens += 1
        self._context.append(token)
        del self._context[:-CONTEXT_WINDOW]
        if token == EOS_ID:
            return self._finish(FINISH_STOP, self._pending)
        self._pending += ALPHABET[token]
        stop = self.params.stop
        if stop:
            found = [index for index in map(self._pending.find, stop) if index >= 0]
            if found:
                return self._finish(FINISH_STOP, self._pending[: min(found)])
        if self.completion_tokens >= self.params.max_tokens:
            return self._finish(FINISH_LENGTH, self._pending)
        held = _held_back(self._pending, stop)
        release = len(self._pending) - held
        self._emit(self._pending[:release])
        self._pending = self._pending[release:]
        return False

    def _emit(self, piece: str) -> None:
        self.text += piece
        self._pieces.put_nowait(piece)

    def _finish(self, reason: str, piece: str) -> bool:
        self._emit(piece)
        self._pending = ""
        self.finish_reason = reason
        self._pieces.put_nowait(None)
        return True

    def _fail(self, error: BaseException) -> None:
        if not self._cancelled:
            self._pieces.put_nowait(error)


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many characters at the end of ``text`` could still begin a stop sequence."""
    held = 0
    for sequence in stop:
        for length in range(min(len(sequence) - 1, len(text)), held, -1):
            if text.endswith(sequence[:length]):
                held = length
                break
    return held


class Engine:
    """Continuous batching over one model. ``await start()`` on the event loop, then
    :meth:`submit`; ``await stop()`` ends it.

    ``executor`` runs the decode steps (one at a time); without one the engine starts its own
    thread. ``on_step(batch_size, seconds)`` is called on the event loop after every step
    (``seconds``: the model call and sampling, on the decode thread); it must not block, and
    an exception from it is logged and ignored.

    :meth:`stop` lets a step already running finish, then ends every waiting and active
    generation with :class:`EngineStopped` (an endpoint answers 503); :meth:`submit` raises
    it while the engine is not running.
    """

    def __init__(
        self,
        model: TextModel,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        executor: Executor | None = None,
        on_step: StepCallback | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._executor = executor
        self._own_executor: ThreadPoolExecutor | None = None
        self._on_step = on_step
        self._waiting: deque[Generation] = deque()
        self._active: list[Generation] = []
        self._steps = 0
        self._tokens = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    @property
    def waiting(self) -> int:
        """Generations queued for a slot in the batch."""
        return len(self._waiting)

    @property
    def active(self) -> int:
        """Generations in the batch (what the next step computes)."""
        return len(self._active)

    @property
    def steps(self) -> int:
        """Decode steps run (model calls)."""
        return self._steps

    @property
    def tokens(self) -> int:
        """Tokens generated, over every generation."""
        return self._tokens

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping

    async def start(self) -> None:
        """Start the decode loop on the running event loop (again after a stop is fine)."""
        if self.running:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        if self._executor is None:
            self._own_executor = ThreadPoolExecutor(1, thread_name_prefix="tiny-lm-decode")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tiny-lm-engine")

    async def stop(self) -> None:
        """Finish the running step, then end every waiting and active generation with
        :class:`EngineStopped`."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        # A loop that failed has logged why; either way the engine is stopped now.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self._task = None
        self._end_all()
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False)
            self._own_executor = None

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        """Queue a generation (call it on the engine's event loop). ``ValueError`` for a bad
        prompt (see :func:`check_prompt`); :class:`EngineStopped` when not running."""
        ids = check_prompt(prompt_ids)
        if not self.running:
            raise EngineStopped("the text generation engine is not running")
        generation = Generation(self, ids, params)
        self._waiting.append(generation)
        assert self._wake is not None
        self._wake.set()
        return generation

    def _cancelled(self, generation: Generation) -> None:
        """A generation was cancelled: out of the queue now; out of the batch at the next
        step (the loop drops it)."""
        if generation in self._waiting:
            self._waiting.remove(generation)
            generation._removed.set()

    def _admit(self) -> None:
        now = time.perf_counter()
        kept = []
        for generation in self._active:
            if generation._cancelled:
                generation._removed.set()
            else:
                kept.append(generation)
        self._active = kept
        while self._waiting and len(self._active) < self.max_batch:
            generation = self._waiting.popleft()
            generation.queue_seconds = now - generation.submitted
            self._active.append(generation)

    def _end_all(self) -> None:
        for generation in [*self._active, *self._waiting]:
            generation._fail(EngineStopped("the text generation engine stopped"))
            generation._removed.set()
        self._active.clear()
        self._waiting.clear()

    async def _loop(self) -> None:
        try:
            await self._decode()
        except Exception:
            _log.exception("the text generation engine failed; it stops")
            raise
        finally:
            # Stopped, failed or cancelled (the event loop closing): nobody waits forever.
            self._stopping = True
            self._end_all()

    async def _decode(self) -> None:
        loop = asyncio.get_running_loop()
        executor = self._executor or self._own_executor
        assert self._wake is not None
        while not self._stopping:
            self._admit()
            if not self._active:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._active)
            try:
                inputs = np.stack([generation._window() for generation in batch])
                samplers = [generation._sampler for generation in batch]
                tokens, seconds = await loop.run_in_executor(
                    executor, decode_step, self.model, inputs, samplers
                )
            except Exception as error:  # noqa: BLE001 - handed to every generation of the step
                _log.exception("decode step failed for %d sequences", len(batch))
                for generation in batch:
                    generation._fail(error)
                    generation._removed.set()
                self._active = [g for g in self._active if g not in batch]
                continue
            self._steps += 1
            self._tokens += len(batch)
            if self._on_step is not None:
                try:
                    self._on_step(len(batch), seconds)
                except Exception:  # noqa: BLE001 - telemetry never stops generation
                    _log.exception("on_step callback failed")
            finished = []
            for generation, token in zip(batch, tokens, strict=True):
                if generation._cancelled:
                    continue
                if generation._accept(token):
                    finished.append(generation)
            for generation in finished:
                self._active.remove(generation)
                generation._removed.set()


# --- the raw loop, for benchmarks -------------------------------------------------------------


def raw_decode(
    model: TextModel,
    prompts: Sequence[str | Sequence[int]],
    max_tokens: int,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[int, float]:
    """The engine's batched steps without asyncio, threads or queues: up to ``max_batch``
    prompts decode together, the next prompt joining as one finishes. Each prompt generates
    exactly ``max_tokens`` tokens (the end-of-sequence token ends nothing here), so the work is
    fixed. Returns the tokens generated and the seconds taken."""
    queue = deque(
        TOKENIZER.encode(prompt) if isinstance(prompt, str) else list(prompt) for prompt in prompts
    )
    rng = np.random.default_rng(seed)
    active: list[tuple[list[int], list[int]]] = []  # (context, generated)
    tokens = 0
    started = time.perf_counter()
    while queue or active:
        while queue and len(active) < max_batch:
            active.append((queue.popleft() or [EOS_ID], []))
        inputs = np.stack([window(context) for context, _ in active])
        samplers = [(temperature, rng if temperature > 0 else None)] * len(active)
        step_tokens, _ = decode_step(model, inputs, samplers)
        tokens += len(active)
        for (context, generated), token in zip(active, step_tokens, strict=True):
            context.append(token)
            generated.append(token)
        active = [entry for entry in active if len(entry[1]) < max_tokens]
    return tokens, time.perf_counter() - started


# --- python -m demo_service.textgen --bench ---------------------------------------------------


def bench(model: TextModel, *, steps: int = 200, max_tokens: int = 64) -> dict[str, float]:
    """Milliseconds per decode step (median) at batch 1 and 8, and tokens per second at batch
    1 and 8: of :func:`raw_decode`, and of an :class:`Engine` serving 8 concurrent requests."""
    rng = np.random.default_rng(0)
    contexts = [list(rng.integers(0, EOS_ID, CONTEXT_WINDOW)) for _ in range(8)]
    results: dict[str, float] = {}
    for size in (1, 8):
        inputs = np.stack([window(context) for context in contexts[:size]])
        samplers = [(1.0, np.random.default_rng(index)) for index in range(size)]
        for _ in range(10):
            decode_step(model, inputs, samplers)
        times = [decode_step(model, inputs, samplers)[1] for _ in range(steps)]
        results[f"step_ms_batch{size}"] = 1e3 * float(np.median(times))
    prompts = [TOKENIZER.decode(context) for context in contexts]
    for size in (1, 8):
        tokens, seconds = raw_decode(model, prompts[:size], max_tokens, max_batch=size)
        results[f"raw_tokens_per_s_batch{size}"] = tokens / seconds

    async def serve() -> tuple[int, float]:
        engine = Engine(model, max_batch=8)
        await engine.start()
        try:
            started = time.perf_counter()
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
            generations = [engine.submit(TOKENIZER.encode(prompt), params) for prompt in prompts]
            await asyncio.gather(*(generation.collect() for generation in generations))
            return engine.tokens, time.perf_counter() - started
        finally:
            await engine.stop()

    tokens, seconds = asyncio.run(serve())
    results["engine_tokens_per_s_8_concurrent"] = tokens / seconds
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_service.textgen")
    parser.add_argument("--bench", action="store_true", help="measure decode steps")
    parser.add_argument("--model-path", type=Path, help="model directory (default MODEL_PATH)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.bench:
        parser.print_help()
        return 2
    directory = args.model_path or DemoSettings.from_env().model_path
    model = load(directory, DEFAULT_VERSION, args.device, (1, 8), threads=args.threads)
    print(f"tiny-lm {model.version} on {model.provider} ({model.device}), threads {args.threads}")
    results = bench(model, steps=args.steps)
    for size in (1, 8):
        step = results[f"step_ms_batch{size}"]
        raw = results[f"raw_tokens_per_s_batch{size}"]
        print(
            f"batch {size}: {step:.2f} ms per step ({step / size:.2f} ms per token), "
            f"{raw:.0f} tokens/s"
        )
    print(f"engine, 8 concurrent: {results['engine_tokens_per_s_8_concurrent']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
