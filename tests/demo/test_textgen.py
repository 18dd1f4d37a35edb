"""Text generation: greedy and seeded sampling are reproducible whatever else is batched,
stop sequences and max_tokens end generations as the OpenAI API does, cancellation stops the
work, the engine really batches (continuously, off the event loop), stopping it ends every
generation with EngineStopped, and the raw loop does the same steps without asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from demo_service import textgen_model as tm
from demo_service.textgen import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    MAX_MAX_TOKENS,
    MAX_PROMPT_CHARS,
    Engine,
    EngineStopped,
    Generation,
    SamplingParams,
    bench,
    check_prompt,
    raw_decode,
    sample,
)

pytestmark = pytest.mark.anyio
ENCODE = tm.TOKENIZER.encode
GREEDY_LONG = "The quick brown fox"
"""Greedy decoding of this prompt runs past 200 tokens without an end-of-sequence token."""
GREEDY_SHORT = "Once upon a time"
"""Greedy decoding of this prompt ends with the end-of-sequence token after 4 characters."""


@pytest.fixture(scope="module")
def model(textgen_model_dir: Path) -> tm.LoadedTextModel:
    return tm.load(textgen_model_dir, "v1", "cpu", (1, 8))


@asynccontextmanager
async def engine_for(model: Any, **options: Any) -> AsyncIterator[tuple[Engine, list[int]]]:
    """A started engine and the batch size of each of its steps."""
    sizes: list[int] = []
    engine = Engine(model, on_step=lambda size, seconds: sizes.append(size), **options)
    await engine.start()
    try:
        yield engine, sizes
    finally:
        await engine.stop()


def expected_tokens(model: tm.LoadedTextModel, prompt: str, params: SamplingParams) -> list[int]:
    """The tokens of one generation, decoded alone one step at a time, outside the engine."""
    context = ENCODE(prompt) or [tm.EOS_ID]
    rng = params.generator()
    tokens: list[int] = []
    while len(tokens) < params.max_tokens:
        token = sample(model.logits(tm.window(context)[None])[0], params.temperature, rng)
        tokens.append(token)
        context.append(token)
        if token == tm.EOS_ID:
            break
    return tokens


async def pieces_of(generation: Generation) -> list[str]:
    return [piece async for piece in generation]


async def test_greedy_generation_is_the_step_by_step_argmax(model: tm.LoadedTextModel) -> None:
    """Greedy text equals argmax decoding done by hand; the same request twice (and twice at
    once) gives the same text; max_tokens ends it with 'length' after exactly that many
    tokens, one piece per token."""
    params = SamplingParams(max_tokens=40, temperature=0.0)
    expected = tm.TOKENIZER.decode(expected_tokens(model, GREEDY_LONG, params))
    async with engine_for(model) as (engine, _):
        first = engine.submit(ENCODE(GREEDY_LONG), params)
        pieces = await pieces_of(first)
        together = [engine.submit(ENCODE(GREEDY_LONG), params) for _ in range(2)]
        texts = await asyncio.gather(*(generation.collect() for generation in together))
    assert "".join(pieces) == first.text == expected == texts[0] == texts[1]
    assert len(expected) == 40
    assert first.finish_reason == FINISH_LENGTH
    assert first.completion_tokens == 40 == len(pieces)
    assert first.prompt_tokens == len(GREEDY_LONG)
    assert first.queue_seconds is not None
    assert first.queue_seconds >= 0
    assert first.done
    with pytest.raises(StopAsyncIteration):  # over, and stays over
        await first.__anext__()
    assert await first.collect() == expected


async def test_end_of_sequence_finishes_with_stop(model: tm.LoadedTextModel) -> None:
    """The end-of-sequence token ends a generation with 'stop'; it is counted as a completion
    token, has an empty piece and no text."""
    params = SamplingParams(max_tokens=100, temperature=0.0)
    tokens = expected_tokens(model, GREEDY_SHORT, params)
    assert tokens[-1] == tm.EOS_ID
    async with engine_for(model) as (engine, _):
        generation = engine.submit(ENCODE(GREEDY_SHORT), params)
        pieces = await pieces_of(generation)
    assert generation.finish_reason == FINISH_STOP
    assert generation.completion_tokens == len(tokens) == len(pieces)
    assert pieces[-1] == ""
    assert generation.text == tm.TOKENIZER.decode(tokens)


async def test_seeded_sampling_is_reproducible_alone_or_batched(
    model: tm.LoadedTextModel,
) -> None:
    """A seeded request gives the same text alone and batched with three others (which join
    before and during it), and what decoding it alone by hand gives; another seed gives
    other text."""
    params = SamplingParams(max_tokens=120, temperature=1.0, seed=1)
    expected = tm.TOKENIZER.decode(expected_tokens(model, "Hello", params))
    assert len(expected) > 60
    async with engine_for(model) as (engine, sizes):
        alone = await engine.submit(ENCODE("Hello"), params).collect()
        assert set(sizes) == {1}
        sizes.clear()
        companions = [
            engine.submit(ENCODE(prompt), SamplingParams(120, 1.0, seed, ()))
            for seed, prompt in enumerate(["Hi", "Hello", "hello!"], start=10)
        ]
        await companions[0].__anext__()
        batched = engine.submit(ENCODE("Hello"), params)
        late = engine.submit(ENCODE("Hey"), SamplingParams(120, 0.7, 99, ()))
        text = await batched.collect()
        other = await engine.submit(ENCODE("Hello"), SamplingParams(120, 1.0, 2, ())).collect()
        for generation in [*companions, late]:
            await generation.collect()
    assert alone == text == expected
    assert max(sizes) >= 4
    assert other != expected


async def test_unseeded_sampling_varies_and_ends_on_its_own(model: tm.LoadedTextModel) -> None:
    """Sixteen unconstrained samples at temperature 1 differ, and most end by themselves
    (end-of-sequence) well before max_tokens: their lengths spread over tens of tokens."""
    params = SamplingParams(max_tokens=MAX_MAX_TOKENS, temperature=1.0)
    async with engine_for(model) as (engine, _):
        generations = [engine.submit(ENCODE("Hello"), params) for _ in range(16)]
        texts = await asyncio.gather(*(generation.collect() for generation in generations))
    assert len(set(texts)) >= 12
    stopped = [g for g in generations if g.finish_reason == FINISH_STOP]
    assert len(stopped) >= 12
    for generation in stopped:
        assert generation.completion_tokens == len(generation.text) + 1
    lengths = sorted(generation.completion_tokens for generation in generations)
    assert 5 <= lengths[len(lengths) // 2] <= 200


async def test_stop_sequence_is_excluded_and_held_back_only_as_needed(
    model: tm.LoadedTextModel,
) -> None:
    """A stop sequence taken from a greedy output ends that output where it first occurs,
    with 'stop', the sequence not in the text. While streaming, a character is held back
    only while it could begin the stop sequence."""
    params = SamplingParams(max_tokens=60, temperature=0.0)
    async with engine_for(model) as (engine, _):
        full = await engine.submit(ENCODE(GREEDY_LONG), params).collect()
        stop = full[20:24]
        cut = full.find(stop)
        generation = engine.submit(
            ENCODE(GREEDY_LONG), SamplingParams(60, 0.0, None, ("\x01never", stop))
        )
        pieces = await pieces_of(generation)
    assert generation.text == "".join(pieces) == full[:cut]
    assert generation.finish_reason == FINISH_STOP
    assert generation.completion_tokens == cut + len(stop) == len(pieces)
    released = 0
    for count, piece in enumerate(pieces, start=1):
        released += len(piece)
        generated = full[:count]
        held = count - released
        if count < len(pieces):
            # held back: exactly the longest end of the text that begins the stop sequence
            longest = max(k for k in range(len(stop)) if generated.endswith(stop[:k]))
            assert held == longest, (count, generated[-5:], held)


async def test_a_stop_sequence_that_never_completes_releases_everything(
    model: tm.LoadedTextModel,
) -> None:
    """Characters held back for a stop sequence that then does not match are released with
    a later piece; the text is the whole output and it ends with 'length'."""
    params = SamplingParams(max_tokens=50, temperature=0.0)
    async with engine_for(model) as (engine, _):
        full = await engine.submit(ENCODE(GREEDY_LONG), params).collect()
        almost = full[10:13] + "\x7f"  # never generated: not in the alphabet
        generation = engine.submit(ENCODE(GREEDY_LONG), SamplingParams(50, 0.0, None, (almost,)))
        pieces = await pieces_of(generation)
    assert "".join(pieces) == full
    assert generation.finish_reason == FINISH_LENGTH
    assert "" in pieces
    assert len(pieces) == 50


async def test_cancelling_stops_the_work_for_that_sequence_only(
    model: tm.LoadedTextModel,
) -> None:
    """After aclose() no step computes the cancelled sequence any more: its token count stops
    growing, every later step has batch size 1, and the other sequence runs to its end."""
    params = SamplingParams(max_tokens=120, temperature=0.0)
    async with engine_for(model) as (engine, sizes):
        leaving = engine.submit(ENCODE(GREEDY_LONG), params)
        staying = engine.submit(ENCODE("abc"), params)
        for _ in range(5):
            await leaving.__anext__()
        await leaving.aclose()
        assert engine.active == 1
        tokens_at_close, steps_at_close = leaving.completion_tokens, engine.steps
        assert tokens_at_close < 120
        text = await staying.collect()
    assert len(text) == 120
    assert staying.finish_reason == FINISH_LENGTH
    assert leaving.finish_reason == FINISH_CANCELLED
    assert leaving.completion_tokens == tokens_at_close
    assert engine.steps > steps_at_close
    assert set(sizes[steps_at_close:]) == {1}
    assert await pieces_of(leaving) == []
    assert leaving.done


async def test_cancelling_a_waiting_generation_takes_it_out_of_the_queue(
    model: tm.LoadedTextModel,
) -> None:
    async with engine_for(model, max_batch=1) as (engine, _):
        running = engine.submit(ENCODE("abc"), SamplingParams(30, 0.0))
        queued = engine.submit(ENCODE("abc"), SamplingParams(30, 0.0))
        await running.__anext__()
        assert (engine.active, engine.waiting) == (1, 1)
        queued.cancel()
        assert engine.waiting == 0
        assert queued.done
        await queued.aclose()  # returns at once
        await running.collect()
    assert queued.completion_tokens == 0
    assert queued.queue_seconds is None
    assert queued.finish_reason == FINISH_CANCELLED


async def test_continuous_batching_shares_steps(model: tm.LoadedTextModel) -> None:
    """Eight concurrent generations of different lengths: most steps carry several sequences,
    far fewer steps run than tokens are generated, and the batch shrinks as they finish."""
    async with engine_for(model) as (engine, sizes):
        generations = [
            engine.submit(ENCODE(f"prompt {i}"), SamplingParams(20 + 5 * i, 0.0)) for i in range(8)
        ]
        assert engine.waiting + engine.active == 8
        await asyncio.gather(*(generation.collect() for generation in generations))
        assert (engine.waiting, engine.active) == (0, 0)
    total = sum(generation.completion_tokens for generation in generations)
    assert total == engine.tokens == sum(sizes)
    assert engine.steps == len(sizes) < total / 2
    assert sum(size > 1 for size in sizes) > len(sizes) / 2
    assert max(sizes) == 8
    assert sizes == sorted(sizes, reverse=True)


async def test_waiting_generations_join_as_slots_free(model: tm.LoadedTextModel) -> None:
    """With max_batch 3, later requests wait in FIFO order and join the running batch as soon
    as a sequence finishes, beside sequences at other positions; the batch stays full."""
    async with engine_for(model, max_batch=3) as (engine, sizes):
        lengths = [10, 30, 50, 20, 40, 15, 25]
        generations = [
            engine.submit(ENCODE(f"p{i}"), SamplingParams(length, 0.0))
            for i, length in enumerate(lengths)
        ]
        assert (engine.active, engine.waiting) == (0, 7)
        await asyncio.sleep(0)
        await generations[0].__anext__()
        assert (engine.active, engine.waiting) == (3, 4)
        await asyncio.gather(*(generation.collect() for generation in generations))
    assert max(sizes) == 3
    queued = [generation.queue_seconds for generation in generations]
    assert all(seconds is not None for seconds in queued)
    assert queued[3] > queued[0]  # type: ignore[operator]
    # 190 tokens in batches of at most 3: the batch stays full until the queue is empty.
    assert len(sizes) < sum(lengths) / 3 + 30
    assert [g.completion_tokens for g in generations] == lengths


async def test_model_runs_off_the_event_loop(model: tm.LoadedTextModel) -> None:
    """Every model call runs on the decode thread, not the event loop's."""
    threads: set[int] = set()

    class Spy:
        def logits(self, ids: np.ndarray) -> np.ndarray:
            threads.add(threading.get_ident())
            return model.logits(ids)

    async with engine_for(Spy()) as (engine, _):
        await engine.submit(ENCODE("abc"), SamplingParams(5, 0.0)).collect()
    assert threads
    assert threading.get_ident() not in threads


async def test_stopping_ends_every_generation_with_engine_stopped(
    model: tm.LoadedTextModel,
) -> None:
    """stop(): active and waiting generations raise EngineStopped (after the pieces already
    produced); submitting to a stopped engine raises it too; the engine can start again."""
    engine = Engine(model, max_batch=2)
    with pytest.raises(EngineStopped):
        engine.submit(ENCODE("abc"), SamplingParams(10, 0.0))
    await engine.start()
    generations = [engine.submit(ENCODE("abc"), SamplingParams(200, 0.0)) for _ in range(3)]
    await generations[0].__anext__()
    await engine.stop()
    for generation in generations:
        assert generation.done
        with pytest.raises(EngineStopped):
            async for _ in generation:
                pass
        assert generation.finish_reason is None
    assert (engine.active, engine.waiting) == (0, 0)
    with pytest.raises(EngineStopped):
        engine.submit(ENCODE("abc"), SamplingParams(10, 0.0))
    await engine.start()
    try:
        assert len(await engine.submit(ENCODE("abc"), SamplingParams(10, 0.0)).collect()) == 10
    finally:
        await engine.stop()


async def test_a_failing_step_callback_is_ignored(model: tm.LoadedTextModel) -> None:
    def broken(size: int, seconds: float) -> None:
        raise ValueError("telemetry down")

    engine = Engine(model, on_step=broken)
    await engine.start()
    try:
        assert len(await engine.submit(ENCODE("abc"), SamplingParams(5, 0.0)).collect()) == 5
    finally:
        await engine.stop()
    assert engine.steps == 5


async def test_a_failing_step_fails_its_generations_not_the_engine(
    model: tm.LoadedTextModel,
) -> None:
    class Flaky:
        fail = True

        def logits(self, ids: np.ndarray) -> np.ndarray:
            if self.fail:
                raise RuntimeError("device lost")
            return model.logits(ids)

    flaky = Flaky()
    async with engine_for(flaky) as (engine, _):
        failing = engine.submit(ENCODE("abc"), SamplingParams(10, 0.0))
        with pytest.raises(RuntimeError, match="device lost"):
            await failing.collect()
        assert failing.done
        flaky.fail = False
        assert len(await engine.submit(ENCODE("abc"), SamplingParams(10, 0.0)).collect()) == 10


async def test_empty_and_long_prompts(model: tm.LoadedTextModel) -> None:
    """An empty prompt starts from the end-of-sequence token; a prompt longer than the window
    counts in full but only its last CONTEXT_WINDOW tokens matter."""
    params = SamplingParams(20, 0.0)
    tail = "x" * tm.CONTEXT_WINDOW
    async with engine_for(model) as (engine, _):
        empty = engine.submit([], params)
        long = engine.submit(ENCODE("y" * 1000 + tail), params)
        short = engine.submit(ENCODE(tail), params)
        texts = await asyncio.gather(empty.collect(), long.collect(), short.collect())
    assert empty.prompt_tokens == 0
    assert texts[0] == tm.TOKENIZER.decode(expected_tokens(model, "", params))
    assert long.prompt_tokens == 1000 + tm.CONTEXT_WINDOW
    assert texts[1] == texts[2]


def test_sampling_params_are_checked() -> None:
    assert SamplingParams(1, 0, None, ()).temperature == 0.0
    assert SamplingParams(512, 2.0, -5, "END").stop == ("END",)  # type: ignore[arg-type]
    assert SamplingParams(5, 1.0, 3, ["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]
    bad: dict[str, Any]
    for bad in (
        {"max_tokens": 0},
        {"max_tokens": MAX_MAX_TOKENS + 1},
        {"max_tokens": 5.0},
        {"max_tokens": True},
        {"temperature": -0.1},
        {"temperature": 2.01},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"temperature": "1"},
        {"seed": 1.5},
        {"seed": True},
        {"stop": ("",)},
        {"stop": ("a", "b", "c", "d", "e")},
        {"stop": ("x" * 65,)},
        {"stop": (3,)},
    ):
        values: dict[str, Any] = {"max_tokens": 10, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**values)


def test_prompts_are_checked() -> None:
    assert check_prompt(ENCODE("ok")) == ENCODE("ok")
    assert check_prompt([tm.EOS_ID]) == [tm.EOS_ID]
    with pytest.raises(ValueError, match="at most 4096"):
        check_prompt([0] * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(ValueError, match="token ids"):
        check_prompt([tm.PAD_ID])
    with pytest.raises(ValueError, match="token ids"):
        check_prompt([-1])


def test_greedy_and_seeded_sampling() -> None:
    logits = np.array([0.0, 3.0, 1.0, *[0.0] * (tm.VOCAB_SIZE - 3)], np.float32)
    logits[tm.PAD_ID] = 50.0  # never drawn, even when the model favours it
    assert sample(logits, 0.0, None) == 1
    draws = [sample(logits, 1.0, np.random.default_rng(seed)) for seed in range(200)]
    assert tm.PAD_ID not in draws
    assert draws.count(1) > draws.count(2) > 0
    again = [sample(logits, 1.0, np.random.default_rng(seed)) for seed in range(200)]
    assert draws == again


def test_raw_decode_runs_the_same_steps_without_asyncio(model: tm.LoadedTextModel) -> None:
    tokens, seconds = raw_decode(model, ["abc", ENCODE("hello"), ""], 12, max_batch=2)
    assert tokens == 36
    assert seconds > 0


def test_step_timings(model: tm.LoadedTextModel) -> None:
    """Measured, printed (run with -s), loosely held: a batch of 8 costs far less than 8
    steps of one."""
    results = bench(model, steps=50, max_tokens=32)
    for name, value in results.items():
        print(f"{name}: {value:.2f}")
    assert results["step_ms_batch8"] < 8 * results["step_ms_batch1"]
    assert results["raw_tokens_per_s_batch8"] > results["raw_tokens_per_s_batch1"]
