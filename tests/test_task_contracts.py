"""Contracts of every registered task and data source, used the way ``atoken train`` uses them:
the public contract classes ``atoken plugins check`` runs on a plugin's components
(:mod:`atoken.scaffold.contracts`), here over every registered one.

Each registered data source is built with its defaults, or with the data table its factory's
``example_data(folder)`` writes (a source that needs a location and has no example data
fails here: every built-in one has it), gives deterministic batches of float32 samples its
modality packs, and held-out samples with names. Each registered task is built from a bare
``[[tasks]]`` table, trains one step through ``model(batch)`` (a finite loss with gradients)
and evaluates.
"""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.scaffold.contracts import DataSourceContract, TaskContract

REGISTRY = atoken.get_registry()


class TestEveryDataSource(DataSourceContract):
    skip_unbuildable = False  # every built-in source gives example_data

    @pytest.fixture(autouse=True, params=REGISTRY.data_sources.names())
    def registered(self, request):
        self.source_name = request.param


class TestEveryTask(TaskContract):
    skip_unbuildable = False  # every built-in task gives example_data or a default source

    @pytest.fixture(autouse=True, params=REGISTRY.tasks.names())
    def registered(self, request):
        self.task_name = request.param

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        """One tiny model for every task (the contract's own is built per test)."""
        torch.manual_seed(0)
        every = REGISTRY.modalities.names()  # each task's modality, as a run file's tasks add it
        return atoken.Tokenizer.from_preset(
            "tiny", depth=1, decoder_depth=1, text_encoder="minilm", modalities=every
        ).train()
