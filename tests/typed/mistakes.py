"""Mistakes ``mypy --strict`` must report in a user's file, one per line marked with an error
comment (tests/test_typing.py). Type-checked, never run."""

from __future__ import annotations

from fastapi import FastAPI

import aiobs
import aiobs.ops
import aiobs.testing

app = FastAPI()
aiobs.instrument(app, servce_name="x")  # error: unexpected keyword
aiobs.instrument(app, sampler_arg="0.1")  # error: str for a float
aiobs.instrument(app, sampler="always")  # error: not a sampler name
aiobs.setup(tracing="false")  # error: str for a bool
aiobs.instrument(object())  # error: not an app
obs = aiobs.setup()
obs.settings = aiobs.Settings()  # error: read-only
obs.inference("m", batch_size="8")  # error: str for an int
aiobs.testing.capture(app, servce_name="x")  # error: unexpected keyword
aiobs.ops.RulesConfig(job=3)  # error: int for a str
